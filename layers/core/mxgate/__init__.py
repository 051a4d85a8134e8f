"""mxgate: an inbound email gateway for AWS SES Mail Manager, and the same gateway on one machine."""

__version__ = "0.1.0"
