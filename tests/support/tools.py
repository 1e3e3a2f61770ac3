"""The OpenAI function tools the provider, emulator and adapter tests call: one weather
tool with an argument, one time tool, in the two spellings the tests were written with.

`Any`: each test hands them to a different SDK or translator, whose parameter types differ."""

from __future__ import annotations

from typing import Any

CITY: Any = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER: Any = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather in a city", "parameters": CITY},
}
TIME: Any = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
# Without a description, and a time tool whose argument is required: the emulators then
# make up a `tz` argument, so a call to it carries arguments too.
WEATHER_BARE: Any = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}
TIME_TZ: Any = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}, "required": ["tz"]}},
}
