#!/usr/bin/env python3
"""What the Dockerfile's final stage declares for the image's config: USER, EXPOSE, ENTRYPOINT,
CMD (exec form) and LABEL.

  dockerfile-final-stage.py Dockerfile --flags   nhi-image build flags, one per line
  dockerfile-final-stage.py Dockerfile --json    the same as the config's JSON fields
"""
import json
import shlex
import sys


def final_stage(path):
    lines, current = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            if current:
                lines.append(current)
            current = ""
    last_from = max(i for i, l in enumerate(lines) if l.upper().startswith("FROM "))
    return lines[last_from + 1:]


def declared(path):
    config = {"User": "", "Entrypoint": [], "Cmd": [], "ExposedPorts": [], "Labels": {}}
    for line in final_stage(path):
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "USER":
            config["User"] = rest.strip()
        elif word == "EXPOSE":
            config["ExposedPorts"] += [p if "/" in p else p + "/tcp" for p in rest.split()]
        elif word in ("ENTRYPOINT", "CMD"):
            config["Entrypoint" if word == "ENTRYPOINT" else "Cmd"] = json.loads(rest)
        elif word == "LABEL":
            for kv in shlex.split(rest):
                k, _, v = kv.partition("=")
                config["Labels"][k] = v
    return config


def main():
    config = declared(sys.argv[1])
    if sys.argv[2] == "--json":
        print(json.dumps(config, sort_keys=True))
        return
    print("--user")
    print(config["User"])
    for a in config["Entrypoint"]:
        print("--entrypoint")
        print(a)
    for a in config["Cmd"]:
        print("--cmd")
        print(a)
    for p in config["ExposedPorts"]:
        print("--expose")
        print(p)
    for k, v in config["Labels"].items():
        print("--label")
        print(f"{k}={v}")


if __name__ == "__main__":
    main()
