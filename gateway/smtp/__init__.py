"""The SMTP edge: aiosmtpd listeners, their handler, and every reply they send."""
