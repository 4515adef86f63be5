"""Verification (核验): templates answered for one consenting subject, with signed receipts."""
