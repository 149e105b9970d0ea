"""The clock (`python -m scheduler`): leader election and the jobs that heal stuck campaigns.

Importing this package starts nothing: the web process imports `scheduler.leader`,
`scheduler.registry` and `scheduler.runs` to report the clock's state in `/health/full`.
"""
