"""Demo data for ``tallygate demo``: keys, prices and weeks of realistic call records.

The traffic is shaped by a real trace (``data/azure_llm_2023.csv.gz``, see
``data/ATTRIBUTION.md``) rather than uniform noise, so the charts look like a real platform's.
"""
