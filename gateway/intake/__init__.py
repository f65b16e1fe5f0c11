"""Intake: from DATA bytes to a verdict, stored copies and a reply."""
