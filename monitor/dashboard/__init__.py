"""What operators read of the event's path, for the dashboard's JSON.

overview.py: what /dashboard/state.json answers, with the Kafka state read
once per process for every request (cluster.py: every topic and every
consumer group on the cluster; lag.py: a group's lag in records and in time;
record_times.py: the times of the records a lag in time is read from);
rates.py: events per second per type, and the types seen, from the
analytics tables. All of it only reads: nothing here changes the path it
reports on. The HTTP views (monitor.views.dashboard) serve them.
"""
