using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Patterns.Gateway.Health;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Tests;

/// <summary>The outlier detector's counters on their own, with YARP's health updater replaced by one that records.</summary>
public sealed class OutlierCounterTests
{
    [Fact]
    public void TwoFailuresBothReachingTheLimit_EjectOnce()
    {
        // The updater records and does not write the destination's health: as when a second failure (another request's
        // thread, or the passive health hook) checks the health before the first one's ejection has written it. The second
        // failure must neither eject again nor lengthen the ejection (30 s, not 60 s).
        var updater = new RecordingUpdater();
        var detector = new OutlierDetector(updater, new FakeTimeProvider(), NullLogger<OutlierDetector>.Instance);
        var (cluster, a) = Cluster();

        detector.Record(cluster, a, failure: true);
        detector.Record(cluster, a, failure: true);

        updater.Ejections.Should().ContainSingle().Which.Should().Be(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public void AfterTheEjectionEnds_AFailureEjectsAgain()
    {
        var updater = new RecordingUpdater();
        var time = new FakeTimeProvider();
        var detector = new OutlierDetector(updater, time, NullLogger<OutlierDetector>.Instance);
        var (cluster, a) = Cluster();

        detector.Record(cluster, a, failure: true);
        time.Advance(TimeSpan.FromSeconds(30));
        detector.Record(cluster, a, failure: true);

        updater.Ejections.Should().HaveCount(2);
    }

    private static (ClusterState Cluster, DestinationState Destination) Cluster()
    {
        var config = new ClusterConfig
        {
            ClusterId = "c",
            Metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "1" },
            HealthCheck = new HealthCheckConfig { Passive = new PassiveHealthCheckConfig { Enabled = true, Policy = GatewayPolicies.OutlierDetection } },
            Destinations = new Dictionary<string, DestinationConfig>
            {
                ["a"] = new() { Address = "http://127.0.0.1:1" },
                ["b"] = new() { Address = "http://127.0.0.1:2" },
            },
        };
#pragma warning disable CA2000 // The invoker is never used: the model needs one.
        var cluster = new ClusterState("c", new ClusterModel(config, new HttpMessageInvoker(new HttpClientHandler())));
#pragma warning restore CA2000
        var a = new DestinationState("a");
        var b = new DestinationState("b");
        cluster.DestinationsState = new ClusterDestinationsState([a, b], [a, b]);
        return (cluster, a);
    }

    private sealed class RecordingUpdater : IDestinationHealthUpdater
    {
        public List<TimeSpan> Ejections { get; } = [];

        public void SetActive(ClusterState cluster, IEnumerable<NewActiveDestinationHealth> newHealthPairs)
        {
        }

        public void SetPassive(ClusterState cluster, DestinationState destination, DestinationHealth newHealth, TimeSpan reactivationPeriod)
        {
            lock (Ejections)
            {
                Ejections.Add(reactivationPeriod);
            }
        }
    }
}
