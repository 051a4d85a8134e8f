"""`mxgate sandbox`: the deployed stack on one machine. The template's resources in moto, its
Lambda handlers called as Lambda calls them, its state machine run by moto's Step Functions
interpreter, its Mail Manager resources (ingress points, rule sets, relays) emulated on
loopback, and local mailbox hosts standing in for Google Workspace and Microsoft 365.

Needs the `sandbox` extra (moto, boto3, powertools): `pip install mxgate[sandbox]`.
"""
