"""The BOS domain: models, state machine, pipelines, services, selectors, API, admin, Kafka."""
