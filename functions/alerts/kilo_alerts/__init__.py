"""Alerts: billing events on the bus -> the account's chosen channels (SES v2 email, SNS SMS), each at most once."""
