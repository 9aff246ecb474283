# greeter.py
from collectors import Collector, operation


class Greeter(Collector):
    collector_type = "greeter"
    max_concurrent_tasks = 8

    @operation
    async def greet(self, payload, ctx):
        ctx.report_progress(0.5, "thinking")
        return f"hello {payload['name']}"

    @operation
    def shout(self, payload):  # plain functions run in a thread pool
        return payload["text"].upper()
