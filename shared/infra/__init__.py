"""The plumbing: settings, SQL database and its tables, object storage, the queue, jobs, the model registry,
authentication, logging and private files. May use shared.domain; shared.domain never uses it."""
