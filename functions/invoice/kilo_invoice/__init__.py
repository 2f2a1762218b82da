"""Invoicing: the monthly close, our invoices, card billing through Stripe, payment status, credit notes, refunds."""
