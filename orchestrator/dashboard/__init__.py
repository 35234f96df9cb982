"""The operator dashboard at `/dashboard/` (CONTRACT §5; docs/dashboard.md).

`windows` and `formatting` are pure (time windows and their buckets, numbers for
people); `selectors` reads the database, tenant-scoped through `orchestrator.access`;
`probes` asks the broker, Kafka and Redis with a deadline; `panels` shapes what they
return into tables and Chart.js data; `views` serves the page and a batch's graph.
"""
