"""The Feast repo: the `customer` entity and the activity feature view, applied per tenant."""
