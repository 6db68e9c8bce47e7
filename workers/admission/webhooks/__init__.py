"""Tenants' alert webhooks: where a POST may go, how it is signed and sent, and the rounds that
deliver published budget alerts to each tenant apart."""
