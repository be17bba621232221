"""What operators read of the event's path, for the dashboard's JSON.

overview.py: the topics' offsets, each consumer group's lag, the dead
letters and who watches the live streams; rates.py: events per second per
type, from the analytics tables. Both only read: nothing here changes the
path it reports on. The HTTP views (monitor.views.dashboard) serve them.
"""
