"""Accounts, the people in them and what they may do, and the audit log of every change (spec/accounts.md)."""
