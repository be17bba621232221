"""What users touch: writes in services, reads in selectors.

The social feed's domain, above the event contract: a service saves a
change and emits its event in one transaction (:mod:`monitor.feed.services`);
the pages read through :mod:`monitor.feed.selectors`; forms and photo
processing check what users send before a service sees it.
"""
