"""CEP sync: integrations, field mappings, the transactional outbox and the delivery worker."""
