"""The ``pkiq`` command: the front end over ``service`` (the use cases) and ``worker`` (the
Celery app it starts). Nothing below this package imports it."""
