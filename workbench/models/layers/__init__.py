"""Reusable layers: attention, graph, state-space, embeddings."""
