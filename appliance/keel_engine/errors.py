"""Faults: the one error type the service layer raises; the API renders it
as oVirt's <fault><reason/><detail/></fault> with the matching status."""


class Fault(Exception):
    def __init__(self, status, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.status = status
        self.reason = reason
        self.detail = detail


def bad_request(detail):
    return Fault(400, "Operation Failed", detail)


def not_found(kind, ident):
    return Fault(404, "Not Found", f"{kind} '{ident}' does not exist")


def conflict(detail):
    return Fault(409, "Operation Failed", detail)
