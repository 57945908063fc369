"""A bridge from the tests to `dispatch mcp` through the official MCP Python SDK's client.

Usage: client.py DISPATCH [ARGS...]   (run in the fixture's directory, with its environment)

It starts `DISPATCH mcp ARGS...` over stdio with the SDK's `stdio_client`, initializes a
`ClientSession`, then reads one JSON request per line on stdin and answers one JSON line on
stdout for each:

  {"list_tools": true}                      -> {"tools": [{name, input_schema, output_schema, annotations}]}
  {"call": NAME, "arguments": {...}}        -> {"is_error": bool, "structured": ..., "text": "..."}
  {"server_pid": true}                      -> {"pid": N}  (the MCP server's process)

The SDK validates each tool's structured result against the tool's output schema; a result
that does not match is answered as {"schema_error": "..."}. An exception is {"exception": "..."}.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main() -> None:
    params = StdioServerParameters(
        command=sys.argv[1], args=["mcp", *sys.argv[2:]], env=dict(os.environ), cwd=os.getcwd()
    )
    async with stdio_client(params, errlog=sys.stderr) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            loop = asyncio.get_running_loop()
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    return
                request = json.loads(line)
                try:
                    answer = await handle(session, request)
                except Exception as error:  # noqa: BLE001 - reported to the test, which judges it
                    text = str(error)
                    key = "schema_error" if "schema" in text.lower() else "exception"
                    answer = {key: f"{type(error).__name__}: {text}"}
                print(json.dumps(answer), flush=True)


async def handle(session: ClientSession, request: dict) -> dict:
    if request.get("list_tools"):
        listed = await session.list_tools()
        return {
            "tools": [
                {
                    "name": tool.name,
                    "input_schema": tool.input_schema,
                    "output_schema": tool.output_schema,
                    "annotations": tool.annotations.model_dump(exclude_none=True)
                    if tool.annotations
                    else None,
                }
                for tool in listed.tools
            ]
        }
    if request.get("server_pid"):
        # The server is this process's only child started by the SDK.
        children = os.popen(f"pgrep -P {os.getpid()}").read().split()
        return {"pid": int(children[0]) if children else None}
    result = await session.call_tool(request["call"], request.get("arguments") or {})
    text = "".join(block.text for block in result.content if getattr(block, "type", "") == "text")
    return {"is_error": result.is_error, "structured": result.structured_content, "text": text}


asyncio.run(main())
