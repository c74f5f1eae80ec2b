using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;

namespace Patterns.Gateway.Tests;

public sealed class TelemetryAndHealthTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task HealthCheck_HealthyThenDegradedWhenADestinationIsEjected()
    {
        var time = new FakeTimeProvider();
        await using var good = await Backend.StartAsync("good");
        await using var bad = await Backend.StartAsync("bad", c => { c.Response.StatusCode = 500; return Task.CompletedTask; });
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "1" }, GatewayPolicies.Weighted, (good, null), (bad, null));
        await using var gateway = await Gateways.FromCodeAsync(
            routes, clusters, time,
            services: b => b.Services.AddHealthChecks().AddGatewayClusters(),
            app: a => a.MapHealthChecks("/healthz", new HealthCheckOptions
            {
                ResponseWriter = (c, r) => c.Response.WriteAsync(r.Status + ":" + r.Entries["gateway"].Description),
            }));

        (await gateway.Client.GetStringAsync("/healthz", Ct)).Should().Be("Healthy:1 clusters, every destination available.");
        await OutlierDetectionTests.Send(gateway.Client, 2);
        var cluster = OutlierDetectionTests.Cluster(gateway);
        Waits.Until(() => cluster.DestinationsState.AvailableDestinations.Count == 1, "bad is ejected");

        (await gateway.Client.GetStringAsync("/healthz", Ct)).Should().Be("Degraded:Destinations down in: c.");
    }

    [Fact]
    public async Task Metrics_RetriesAndEjectionsCountedPerCluster()
    {
        var measurements = new List<(string Name, long Value, string? Cluster)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "Patterns.Gateway")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            string? cluster = null;
            foreach (var tag in tags)
            {
                if (tag.Key == "patterns.gateway.cluster")
                {
                    cluster = tag.Value as string;
                }
            }

            lock (measurements)
            {
                measurements.Add((instrument.Name, value, cluster));
            }
        });
        listener.Start();
        var clusterId = "metrics-" + Guid.NewGuid().ToString("N")[..8];
        await using var good = await Backend.StartAsync("good");
        await using var bad = await Backend.StartAsync("bad", c => { c.Response.StatusCode = 503; return Task.CompletedTask; });
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = "1", [GatewayMetadata.OutlierConsecutiveFailures] = "2" },
            GatewayPolicies.Weighted, (good, null), (bad, null));
        await using var gateway = await Gateways.FromCodeAsync([routes[0] with { ClusterId = clusterId }], [clusters[0] with { ClusterId = clusterId }], new FakeTimeProvider());

        await OutlierDetectionTests.Send(gateway.Client, 4);

        lock (measurements)
        {
            measurements.Where(m => m.Name == "patterns.gateway.retries" && m.Cluster == clusterId).Sum(m => m.Value).Should().Be(2);
            measurements.Where(m => m.Name == "patterns.gateway.ejections" && m.Cluster == clusterId).Sum(m => m.Value).Should().Be(1);
        }
    }

    [Fact]
    public async Task Tracing_TranslatedRequestHasAGatewaySpan()
    {
        var spans = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "Patterns.Gateway",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => { lock (spans) { spans.Add(a); } },
        };
        ActivitySource.AddActivityListener(listener);
        var route = "/traced-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await KestrelHost.StartAsync(
            b =>
            {
                b.AddPatterns(p => p.UseInMemory());
                b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) => ValueTask.FromResult(new Quote(q.Symbol, 1m))));
                b.AddGateway();
            },
            app => app.MapRequest<GetQuote, Quote>(route));

        using var response = await host.Client.PostAsync(route, new StringContent("{\"symbol\":\"A\"}", System.Text.Encoding.UTF8, "application/json"), Ct);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        lock (spans)
        {
            spans.Should().ContainSingle(s => s.DisplayName == "gateway.translate " + route)
                .Which.GetTagItem("http.route").Should().Be(route);
        }
    }

    [Fact]
    public async Task Tracing_ProxiedRequest_SpanTaggedWithRouteClusterAndTheDestinationThatAnswered()
    {
        var id = Guid.NewGuid().ToString("N")[..8];
        var spans = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == "Patterns.Gateway",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a =>
            {
                if (a.GetTagItem("patterns.gateway.cluster") as string == "cluster-" + id)
                {
                    lock (spans)
                    {
                        spans.Add(a);
                    }
                }
            },
        };
        ActivitySource.AddActivityListener(listener);
        await using var bad = await Backend.StartAsync("bad", c => { c.Response.StatusCode = 503; return Task.CompletedTask; });
        await using var good = await Backend.StartAsync("good");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = "1" }, GatewayPolicies.Weighted, (bad, null), (good, null));
        await using var gateway = await Gateways.FromCodeAsync(
            [routes[0] with { RouteId = "route-" + id, ClusterId = "cluster-" + id }], [clusters[0] with { ClusterId = "cluster-" + id }]);

        // The first request goes to bad, is retried on good; the second goes to good.
        for (var i = 0; i < 2; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        lock (spans)
        {
            spans.Should().HaveCount(2);
            spans.Should().AllSatisfy(s =>
            {
                s.DisplayName.Should().Be("gateway.proxy route-" + id);
                s.GetTagItem("patterns.gateway.route").Should().Be("route-" + id);
                s.GetTagItem("patterns.gateway.destination").Should().Be("good", "the span names the destination whose answer the client got");
                s.GetTagItem("http.response.status_code").Should().Be(200);
                s.Status.Should().Be(ActivityStatusCode.Unset);
            });
        }
    }

    [Fact]
    public async Task Metrics_ProxyDuration_PerRouteClusterDestinationAndStatus()
    {
        var id = Guid.NewGuid().ToString("N")[..8];
        var measurements = new List<Dictionary<string, object?>>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "Patterns.Gateway" && instrument.Name == "patterns.gateway.proxy.duration")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<double>((_, value, tags, _) =>
        {
            var map = new Dictionary<string, object?>();
            foreach (var tag in tags)
            {
                map[tag.Key] = tag.Value;
            }

            if (map.GetValueOrDefault("patterns.gateway.cluster") as string == "cluster-" + id)
            {
                value.Should().BePositive();
                lock (measurements)
                {
                    measurements.Add(map);
                }
            }
        });
        listener.Start();
        await using var a = await Backend.StartAsync("a");
        await using var failing = await Backend.StartAsync("failing", c => { c.Response.StatusCode = 500; return Task.CompletedTask; });
        var (routes, clusters) = Gateways.OneCluster(null, GatewayPolicies.Weighted, (a, 3), (failing, 1));
        await using var gateway = await Gateways.FromCodeAsync(
            [routes[0] with { RouteId = "route-" + id, ClusterId = "cluster-" + id }], [clusters[0] with { ClusterId = "cluster-" + id }]);

        for (var i = 0; i < 8; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
        }

        lock (measurements)
        {
            measurements.Should().HaveCount(8);
            measurements.Should().AllSatisfy(m => m["patterns.gateway.route"].Should().Be("route-" + id));
            measurements.Count(m => m["patterns.gateway.destination"] as string == "a" && (int)m["http.response.status_code"]! == 200).Should().Be(6);
            measurements.Where(m => m["patterns.gateway.destination"] as string == "failing").Should().HaveCount(2)
                .And.AllSatisfy(m =>
                {
                    m["http.response.status_code"].Should().Be(500);
                    m["error.type"].Should().Be("500");
                });
        }
    }
}
