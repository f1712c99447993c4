"""Platform services: contacts and their marketing data, automation rules, the sync action, event path."""
