"""The Kafka adapter: one settings object, bootstrap servers checked, errors in ecst's words."""

import pytest

from ecst import kafka
from ecst.exceptions import ConfigError, KafkaCodecError, KafkaUnavailableError


def test_bootstrap_servers_are_split_and_shared_by_every_client():
    settings = kafka.KafkaSettings(" a:9092, b:9093 ")
    assert settings.servers == ["a:9092", "b:9093"]
    assert settings.client_options()["bootstrap_servers"] == ["a:9092", "b:9093"]
    assert kafka.as_settings("a:1") == kafka.KafkaSettings("a:1")
    assert kafka.as_settings(settings) is settings


@pytest.mark.parametrize("servers", ["bad:::", "", "host", "host:port", "a:9092,b", "a:70000"])
def test_a_bootstrap_string_that_is_not_host_port_is_a_config_error_naming_it(servers):
    with pytest.raises(ConfigError, match=r"is not host:port; use host:port\[,host:port\]"):
        kafka.KafkaSettings(servers)


def test_kafka_errors_become_one_line_naming_the_servers():
    from kafka.errors import KafkaConnectionError

    settings = kafka.KafkaSettings("127.0.0.1:1")
    with pytest.raises(KafkaUnavailableError, match=r"^couldn't read offsets from Kafka at 127.0.0.1:1: "):
        with kafka.reaching(settings, "read offsets from"):
            raise KafkaConnectionError("111 ECONNREFUSED")


@pytest.mark.parametrize(("codec", "package"), [("snappy", "`python-snappy`"), ("lz4", "`lz4`"),
                                                 ("zstd", "`zstandard`"), ("brotli", "the codec's package")])
def test_a_codec_kafka_python_cannot_decompress_names_the_package_not_an_outage(codec, package):
    from kafka.errors import UnsupportedCodecError

    settings = kafka.KafkaSettings("127.0.0.1:1")
    for block in (kafka.reaching(settings, "read notifications from"), kafka.decompressing()):
        said = (rf"cannot decompress here \(UnsupportedCodecError: Libraries for {codec} .*\): "
                rf"install {package} beside ecst")
        with pytest.raises(KafkaCodecError, match=said):
            with block:
                raise UnsupportedCodecError(f"Libraries for {codec} compression codec not found")


def test_every_codec_kafka_python_decompresses_with_a_package_is_installed():
    from kafka import codec

    assert codec.has_gzip() and codec.has_snappy() and codec.has_lz4() and codec.has_zstd()


def test_an_unreachable_broker_is_kafka_unavailable():
    with pytest.raises(KafkaUnavailableError, match="couldn't connect to Kafka at 127.0.0.1:1"):
        kafka.admin("127.0.0.1:1", request_timeout_ms=1000, api_version_auto_timeout_ms=1000)
