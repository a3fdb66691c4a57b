"""Jobs: a long operation is visible while it runs and records how it ended."""
from ..models import Job, utcnow


def start(session, description, owner_id=None):
    job = Job(description=description, owner_id=owner_id)
    session.add(job)
    session.flush()
    return job


def finish(job, ok=True):
    job.status = "finished" if ok else "failed"
    job.end_time = job.last_updated = utcnow()
