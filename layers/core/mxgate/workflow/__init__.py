"""The workflow: the step code the state machine runs, and a local interpreter for its ASL."""
