"""Operations on a service's data from outside the service: backup and restore."""
