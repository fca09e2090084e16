"""The publishing library for campaign engines, and bulk publishing from JSONL/CSV files.

async with Publisher.connect(Settings.from_env()) as publisher:
    await publisher.publish(job)                      # raises a PublishError when not queued
    results = await publisher.publish_many(jobs)      # one Result per job, failures included
    summary = await publish_file(publisher, "jobs.csv", progress=bar)
"""

from .bulk import BulkFileError, Summary, count_records, publish_file, read_jobs
from .publisher import (
    InvalidJobId,
    NotConfirmed,
    Publisher,
    PublishError,
    Result,
    Route,
    UnknownSender,
    Unroutable,
    sender_route,
)

__all__ = [
    "BulkFileError",
    "InvalidJobId",
    "NotConfirmed",
    "PublishError",
    "Publisher",
    "Result",
    "Route",
    "Summary",
    "UnknownSender",
    "Unroutable",
    "count_records",
    "publish_file",
    "read_jobs",
    "sender_route",
]
