"""The usage ledger: call records, their rollups, pricing and the statistics over them."""
