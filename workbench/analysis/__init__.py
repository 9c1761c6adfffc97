"""Analyses on arrays and tidy tables: embeddings, connectivity, routing, efficiency.

They take arrays or pandas tables rather than models, so a saved run can be re-analysed and
re-plotted; the one exception, ``efficiency.measure_efficiency``, times a model builder and
returns a tidy table.
"""
