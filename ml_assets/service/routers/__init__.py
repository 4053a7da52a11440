"""The ML Service API's routes, one module per resource."""
