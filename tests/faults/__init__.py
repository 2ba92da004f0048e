"""Fault-injection suite: each test injects a real fault and checks what the user gets."""
