"""Ingest: signed LiveKit webhooks, app-reported usage and Stripe webhooks, stored once each."""
