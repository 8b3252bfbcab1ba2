"""The bottom layer: call records, categories, money, prices, the gateway's paths. Every
other layer may import it; it imports no other layer (tests/test_layers.py)."""
