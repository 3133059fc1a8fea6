"""Active learning on FM signals: per-image uncertainty and pooled encoder embeddings, and strategies over them."""
