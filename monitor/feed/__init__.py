"""What people do on the site: writes in services, reads in selectors."""
