"""Collectors shipped with eventbus, runnable by name with ``eventbus-collector run NAME``."""

BUILTINS = {
    "demo": "collectors.builtin.demo:DemoCollector",
    "skilled": "collectors.builtin.skilled:SkilledCollector",
    "procmond": "collectors.builtin.procmond:ProcmondCollector",
}
