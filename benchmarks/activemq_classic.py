"""ActiveMQ Classic (a JVM broker) as a peer for the benchmarks, shared by stomp_throughput.py and
mqtt_throughput.py.

It is the Debian package ``activemq`` (``/usr/share/activemq``, or ``$ACTIVEMQ_HOME``), run as
``java -jar bin/activemq.jar start xbean:file:...`` from a temporary instance directory whose
``activemq.xml`` has one transport connector of the scheme the caller picks (``stomp://`` or
``mqtt://``, on 127.0.0.1 and the caller's port, with optional transport options in its URI),
JMX off, ``persistent`` as asked (then KahaDB in the instance's data directory), warnings only
logged (to ``console.log`` in the instance directory). :func:`find_activemq_classic` says whether
java and the jars are there (for ``mqtt://`` also FuseSource's mqtt-client jar, which Debian's
package lacks: Debian's ``libmqtt-client-java`` has it, and the instance's lib/ links to it); the
project itself never needs a JVM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlencode
from xml.sax.saxutils import quoteattr

from benchlib import run_server

ACTIVEMQ_HOME = Path(os.environ.get("ACTIVEMQ_HOME", "/usr/share/activemq"))
ACTIVEMQ_LOG4J = Path("/etc/activemq/instances-available/main/log4j2.properties")
SCHEMES = ("stomp", "mqtt")  # the transport connectors the benchmarks use
# The mqtt:// connector (lib/activemq-mqtt.jar) needs FuseSource's MQTT codec (org.fusesource.mqtt),
# which Debian's activemq package neither ships nor depends on: without it every MQTT connection
# is refused (NoClassDefFoundError, logged) and the client waits for a CONNACK that never comes.
# Debian's libmqtt-client-java has it; it is linked into the instance's lib/ (on the broker's
# extension classpath) unless ACTIVEMQ_HOME's lib/ has an mqtt-client jar already.
MQTT_CLIENT_JAR = Path(os.environ.get("ACTIVEMQ_MQTT_CLIENT_JAR", "/usr/share/java/mqtt-client.jar"))

ACTIVEMQ_CONFIG = """<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="bench"
          persistent="{persistent}" dataDirectory="{data}">
    <transportConnectors>
      <transportConnector name="{scheme}" uri={uri}/>
    </transportConnectors>
  </broker>
</beans>
"""

# log4j 2 (upstream ActiveMQ 5.17) reads conf/log4j2.properties: Debian's instance template, or
# this when it is missing; Debian's build logs through slf4j-log4j12 to log4j 1.2, which reads
# LOG4J1 (-Dlog4j.configuration). Warnings only, to the console (captured in console.log).
MINIMAL_LOG4J2 = """rootLogger.level=WARN
rootLogger.appenderRef.console.ref=Console
appender.console.type=Console
appender.console.name=Console
appender.console.layout.type=PatternLayout
appender.console.layout.pattern=%5p | %m%n
"""
LOG4J1 = """log4j.rootLogger=WARN, console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%5p | %m%n
"""


def extra_jars(scheme: str) -> list[Path] | str:
    """The jars a ``scheme`` connector needs beyond ACTIVEMQ_HOME's lib/, or why it cannot run."""
    if scheme != "mqtt" or any((ACTIVEMQ_HOME / "lib").rglob("mqtt-client*.jar")):
        return []
    if MQTT_CLIENT_JAR.is_file():
        return [MQTT_CLIENT_JAR]
    return (f"ActiveMQ Classic's mqtt:// connector needs FuseSource's mqtt-client jar, which is "
            f"neither in {ACTIVEMQ_HOME / 'lib'} nor at {MQTT_CLIENT_JAR} (Debian package "
            f"libmqtt-client-java, or set ACTIVEMQ_MQTT_CLIENT_JAR)")


def find_activemq_classic(scheme: str = "stomp") -> tuple[str | None, str]:
    """(java, ActiveMQ Classic's version), or (None, why it cannot run with a ``scheme``
    connector)."""
    java = shutil.which("java")
    if java is None:
        return None, "java is not on the PATH"
    jar = ACTIVEMQ_HOME / "bin" / "activemq.jar"
    if not jar.is_file():
        return None, f"{jar} is missing (Debian package activemq, or set ACTIVEMQ_HOME)"
    jars = extra_jars(scheme)
    if isinstance(jars, str):
        return None, jars
    version = "unknown"
    with contextlib.suppress(OSError, KeyError, zipfile.BadZipFile):
        with zipfile.ZipFile(ACTIVEMQ_HOME / "lib" / "activemq-broker.jar") as archive:
            manifest = archive.read("META-INF/MANIFEST.MF").decode(errors="replace")
        for line in manifest.splitlines():
            if line.startswith("Implementation-Version:"):
                version = line.split(":", 1)[1].strip()
    return java, version


def connector_uri(scheme: str, port: int, options: Mapping[str, str] | None = None) -> str:
    """The transport connector's URI, e.g. ``mqtt://127.0.0.1:61613?transport.x=y``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown transport connector scheme {scheme!r}: expected one of "
                         f"{', '.join(SCHEMES)}")
    query = f"?{urlencode(dict(options))}" if options else ""
    return f"{scheme}://127.0.0.1:{port}{query}"


@contextlib.contextmanager
def activemq_classic(tmp: Path, port: int, java: str, *, scheme: str, persistent: bool = False,
                     options: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """ActiveMQ Classic with one ``scheme`` connector on 127.0.0.1:``port`` (transport
    ``options`` in its URI), its instance in ``tmp`` (``conf``, ``data`` and ``console.log``
    are made there), until it listens (at most 60 s); the java process, stopped by its PID on
    exit."""
    uri = connector_uri(scheme, port, options)
    jars = extra_jars(scheme)
    if isinstance(jars, str):
        raise RuntimeError(jars)
    conf, data = tmp / "conf", tmp / "data"
    conf.mkdir(parents=True)
    data.mkdir()
    if jars:
        (tmp / "lib").mkdir()
        for jar in jars:
            (tmp / "lib" / jar.name).symlink_to(jar.resolve())
    (conf / "activemq.xml").write_text(ACTIVEMQ_CONFIG.format(
        persistent="true" if persistent else "false", data=data, scheme=scheme,
        uri=quoteattr(uri)))
    if ACTIVEMQ_LOG4J.is_file():
        shutil.copy(ACTIVEMQ_LOG4J, conf / "log4j2.properties")
    else:
        (conf / "log4j2.properties").write_text(MINIMAL_LOG4J2)
    (conf / "log4j.properties").write_text(LOG4J1)
    command = [java, "-Xmx512M", f"-Dactivemq.home={ACTIVEMQ_HOME}", f"-Dactivemq.base={tmp}",
               f"-Dactivemq.conf={conf}", f"-Dactivemq.data={data}",
               f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
               "-jar", str(ACTIVEMQ_HOME / "bin" / "activemq.jar"), "start",
               f"xbean:file:{conf / 'activemq.xml'}"]
    with run_server(command, port, timeout=60, log=tmp / "console.log") as server:
        yield server
