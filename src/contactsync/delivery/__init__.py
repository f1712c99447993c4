"""Delivery: the outbox, the pure retry policy, the network guard and the dispatcher."""
