"""What-if replay (`mxgate rules replay`): past messages, as they were received, run again
through the deployed template and a changed one (and changed routes); nothing is sent or
stored, and only the recipients whose decision changes are reported."""
