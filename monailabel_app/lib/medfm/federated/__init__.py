"""Federated adaptation: sites train the same adapter on their own data and exchange only its tensors (NVFlare)."""
