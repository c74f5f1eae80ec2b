using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Model;
using Yarp.ReverseProxy.Transforms;

namespace Patterns.Gateway.Tests;

public sealed class OutlierDetectionTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ConsecutiveFailures_EjectsThenReadmitsWithGrowingEjectionTime()
    {
        var time = new FakeTimeProvider();
        await using var good = await Backend.StartAsync("good");
        await using var bad = await Backend.StartAsync("bad", c => { c.Response.StatusCode = 500; return Task.CompletedTask; });
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string>
            {
                [GatewayMetadata.OutlierConsecutiveFailures] = "3",
                [GatewayMetadata.OutlierBaseEjectionTime] = "00:00:30",
                [GatewayMetadata.OutlierMaxEjectionPercent] = "50",
            },
            GatewayPolicies.Weighted, (good, null), (bad, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);
        var cluster = Cluster(gateway);
        var badState = cluster.DestinationsState.AllDestinations.Single(d => d.DestinationId == "bad");

        await Send(gateway.Client, 6);
        bad.Hits.Should().Be(3);
        Waits.Until(() => cluster.DestinationsState.AvailableDestinations.Count == 1, "bad is ejected");
        badState.Health.Passive.Should().Be(DestinationHealth.Unhealthy);

        await Send(gateway.Client, 10);
        bad.Hits.Should().Be(3, "an ejected destination gets no traffic");

        time.Advance(TimeSpan.FromSeconds(29));
        cluster.DestinationsState.AvailableDestinations.Should().HaveCount(1);
        time.Advance(TimeSpan.FromSeconds(1));
        Waits.Until(() => cluster.DestinationsState.AvailableDestinations.Count == 2, "bad is re-admitted after 30 s");

        await Send(gateway.Client, 6);
        bad.Hits.Should().Be(6);
        Waits.Until(() => cluster.DestinationsState.AvailableDestinations.Count == 1, "bad is ejected a second time");

        // The second ejection lasts twice the base time.
        time.Advance(TimeSpan.FromSeconds(30));
        await Task.Yield();
        badState.Health.Passive.Should().Be(DestinationHealth.Unhealthy);
        time.Advance(TimeSpan.FromSeconds(30));
        Waits.Until(() => cluster.DestinationsState.AvailableDestinations.Count == 2, "bad is re-admitted after 60 s");
    }

    [Fact]
    public async Task FailureRate_HalfOfRequestsFail_Ejected()
    {
        var time = new FakeTimeProvider();
        var flip = 0;
        await using var good = await Backend.StartAsync("good");
        await using var flaky = await Backend.StartAsync("flaky", c =>
        {
            c.Response.StatusCode = Interlocked.Increment(ref flip) % 2 == 0 ? 503 : 200;
            return Task.CompletedTask;
        });
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string>
            {
                [GatewayMetadata.OutlierFailureRate] = "0.5",
                [GatewayMetadata.OutlierMinimumRequests] = "4",
                [GatewayMetadata.OutlierInterval] = "00:01:00",
            },
            GatewayPolicies.Weighted, (good, null), (flaky, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);
        var cluster = Cluster(gateway);

        await Send(gateway.Client, 6);
        cluster.DestinationsState.AllDestinations.Single(d => d.DestinationId == "flaky").Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, "2 failures in 3 requests are below the minimum of 4");
        await Send(gateway.Client, 2);

        Waits.Until(() => cluster.DestinationsState.AvailableDestinations.Count == 1, "flaky is ejected at 2 failures in 4");
        cluster.DestinationsState.AvailableDestinations.Single().DestinationId.Should().Be("good");
    }

    [Fact]
    public async Task ConsecutiveFailures_ASuccessEndsTheRun()
    {
        var time = new FakeTimeProvider();
        int[] answers = [503, 503, 200, 503, 503, 503];
        var sent = -1;
        await using var flaky = await Backend.StartAsync("flaky", c =>
        {
            c.Response.StatusCode = answers[Interlocked.Increment(ref sent)];
            return Task.CompletedTask;
        });
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string>
            {
                [GatewayMetadata.OutlierConsecutiveFailures] = "3",
                [GatewayMetadata.OutlierMaxEjectionPercent] = "100",
            },
            GatewayPolicies.Weighted, (flaky, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);
        var destination = Cluster(gateway).DestinationsState.AllDestinations.Single();

        // Failure, failure, success, failure, failure: never three in a row. The count is taken before each answer reaches
        // the client, so the state is read right after it.
        await Send(gateway.Client, 5);
        destination.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, "the success ended the first run of failures");

        await Send(gateway.Client, 1);
        destination.Health.Passive.Should().Be(DestinationHealth.Unhealthy, "the third failure in a row ejects");
    }

    [Fact]
    public async Task Reload_TurningOnTheFailureRate_CountsOnlyRequestsUnderIt()
    {
        var time = new FakeTimeProvider();
        var sent = 0;
        await using var flaky = await Backend.StartAsync("flaky", c =>
        {
            c.Response.StatusCode = Interlocked.Increment(ref sent) % 2 == 1 ? 503 : 200;
            return Task.CompletedTask;
        });
        var consecutive = new Dictionary<string, string>
        {
            [GatewayMetadata.OutlierConsecutiveFailures] = "3",
            [GatewayMetadata.OutlierMinimumRequests] = "4",
            [GatewayMetadata.OutlierMaxEjectionPercent] = "100",
        };
        var (routes, clusters) = Gateways.OneCluster(consecutive, GatewayPolicies.Weighted, (flaky, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);
        var cluster = Cluster(gateway);
        var destination = cluster.DestinationsState.AllDestinations.Single();

        // Failure, success, ... under consecutive failures alone: never two failures in a row.
        await Send(gateway.Client, 8);
        destination.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy);

        var (routes2, clusters2) = Gateways.OneCluster(
            new Dictionary<string, string>(consecutive) { [GatewayMetadata.OutlierFailureRate] = "0.5" }, GatewayPolicies.Weighted, (flaky, null));
        gateway.Services.GetRequiredService<InMemoryConfigProvider>().Update(routes2, clusters2);
        Waits.Until(() => cluster.Model.Config.Metadata!.ContainsKey(GatewayMetadata.OutlierFailureRate), "the failure rate is configured");

        await Send(gateway.Client, 1);
        destination.Health.Passive.Should().NotBe(
            DestinationHealth.Unhealthy, "one failed request under the failure rate is below its minimum of 4 (the successes before it count as much as the failures)");

        // Success, failure, success: 2 failures in 4 requests, then a third in 5 is over the rate.
        await Send(gateway.Client, 3);
        destination.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, "a success does not eject");
        await Send(gateway.Client, 1);
        destination.Health.Passive.Should().Be(DestinationHealth.Unhealthy, "3 failures in 5 requests since the reload are over the rate of 0.5");
    }

    [Fact]
    public async Task MaxEjectionPercent_AllDestinationsFail_OnlyTheCapIsEjected()
    {
        var time = new FakeTimeProvider();
        Func<HttpContext, Task> fail = c => { c.Response.StatusCode = 502; return Task.CompletedTask; };
        await using var a = await Backend.StartAsync("a", fail);
        await using var b = await Backend.StartAsync("b", fail);
        await using var c = await Backend.StartAsync("c", fail);
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string>
            {
                [GatewayMetadata.OutlierConsecutiveFailures] = "2",
                [GatewayMetadata.OutlierMaxEjectionPercent] = "34",
            },
            GatewayPolicies.Weighted, (a, null), (b, null), (c, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);
        var cluster = Cluster(gateway);

        await Send(gateway.Client, 6);
        Waits.Until(() => cluster.DestinationsState.AvailableDestinations.Count == 2, "one destination is ejected");
        await Send(gateway.Client, 20);

        cluster.DestinationsState.AllDestinations.Count(d => d.Health.Passive == DestinationHealth.Unhealthy).Should().Be(1);
        cluster.DestinationsState.AvailableDestinations.Should().HaveCount(2);
    }

    [Fact]
    public async Task TransportError_CountsAsFailure()
    {
        var time = new FakeTimeProvider();
        await using var good = await Backend.StartAsync("good");
        var deadAddress = await DeadAddressAsync();
        var route = new Yarp.ReverseProxy.Configuration.RouteConfig { RouteId = "r", ClusterId = "c", Match = new() { Path = "{**rest}" } };
        var cluster = new Yarp.ReverseProxy.Configuration.ClusterConfig
        {
            ClusterId = "c",
            LoadBalancingPolicy = GatewayPolicies.Weighted,
            Metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "2" },
            HealthCheck = new() { Passive = new() { Enabled = true, Policy = GatewayPolicies.OutlierDetection } },
            Destinations = new Dictionary<string, Yarp.ReverseProxy.Configuration.DestinationConfig>
            {
                ["good"] = new() { Address = good.Address },
                ["dead"] = new() { Address = deadAddress },
            },
        };
        await using var gateway = await Gateways.FromCodeAsync([route], [cluster], time);
        var state = Cluster(gateway);

        await Send(gateway.Client, 4);

        Waits.Until(() => state.DestinationsState.AvailableDestinations.Count == 1, "the unreachable destination is ejected");
        state.DestinationsState.AvailableDestinations.Single().DestinationId.Should().Be("good");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task EachRequest_CountedOnce_WithOrWithoutResilience(bool withTimeout)
    {
        // Without resilience the route's transformer counts the attempt as its response comes back; with it (a timeout), the
        // resilience handler counts it. Either way once: two consecutive failures eject, and the first request alone does not.
        var time = new FakeTimeProvider();
        await using var bad = await Backend.StartAsync("bad", c => { c.Response.StatusCode = 500; return Task.CompletedTask; });
        var metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "2" };
        if (withTimeout)
        {
            metadata[GatewayMetadata.Timeout] = "00:00:30";
        }

        var (routes, clusters) = Gateways.OneCluster(metadata, GatewayPolicies.Weighted, (bad, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);
        var badState = Cluster(gateway).DestinationsState.AllDestinations.Single();

        await Send(gateway.Client, 1);
        bad.Hits.Should().Be(1);
        badState.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, "one failure is counted once, before its response reaches the client");

        await Send(gateway.Client, 1);
        bad.Hits.Should().Be(2);
        Waits.Until(() => badState.Health.Passive == DestinationHealth.Unhealthy, "the second consecutive failure ejects");
    }

    [Fact]
    public async Task RequestTransformFailing_BeforeSending_IsNotCounted()
    {
        // YARP answers 502 (RequestCreation) and hands the transformer no response: nothing reached the destination, so
        // nothing is counted against it. A transport error, by contrast, counts (TransportError_CountsAsFailure).
        var time = new FakeTimeProvider();
        await using var good = await Backend.StartAsync("good");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "1" }, GatewayPolicies.Weighted, (good, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time, services: b => b.Services.AddGateway(g => g
            .AddTransforms(t => t.AddRequestTransform(_ => throw new InvalidOperationException("transform fails")))));
        var state = Cluster(gateway).DestinationsState.AllDestinations.Single();

        for (var i = 0; i < 2; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            response.StatusCode.Should().Be(System.Net.HttpStatusCode.BadGateway);
        }

        good.Hits.Should().Be(0);
        state.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, "a request that was never sent says nothing about its destination");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ClientBodyPastTheRouteLimit_IsNotCounted(bool withTimeout)
    {
        // A chunked body that grows past the route's MaxRequestBodySize is cut off by the gateway's server while YARP streams
        // it (ForwarderError.RequestBodyClient, 413): the client's fault, which says nothing about the destination, with or
        // without resilience. A single failure would eject here.
        var time = new FakeTimeProvider();
        await using var good = await Backend.StartAsync("good");
        var metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "1" };
        if (withTimeout)
        {
            metadata[GatewayMetadata.Timeout] = "00:00:30";
        }

        var (routes, clusters) = Gateways.OneCluster(metadata, GatewayPolicies.Weighted, (good, null));
        await using var gateway = await Gateways.FromCodeAsync([routes[0] with { MaxRequestBodySize = 16 }], clusters, time);
        var state = Cluster(gateway).DestinationsState.AllDestinations.Single();

        using var response = await gateway.Client.PostAsync("/x", new ChunkedContent(new byte[64]), Ct);

        response.StatusCode.Should().Be(System.Net.HttpStatusCode.RequestEntityTooLarge);
        state.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, "the client's oversize body is not a failure of the destination");
    }

    [Fact]
    public async Task ClientBodyPastTheRouteLimit_DoesNotOpenTheCircuit()
    {
        // Two refused client bodies would be two failures in two attempts, over the ratio: the circuit would open and the
        // next request get 503 without reaching the healthy destination.
        var time = new FakeTimeProvider();
        await using var good = await Backend.StartAsync("good");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string>
            {
                [GatewayMetadata.CircuitBreakerFailureRatio] = "0.5",
                [GatewayMetadata.CircuitBreakerMinimumThroughput] = "2",
                [GatewayMetadata.CircuitBreakerBreakDuration] = "00:00:05",
            },
            GatewayPolicies.Weighted, (good, null));
        await using var gateway = await Gateways.FromCodeAsync([routes[0] with { MaxRequestBodySize = 16 }], clusters, time);

        for (var i = 0; i < 2; i++)
        {
            using var refused = await gateway.Client.PostAsync("/x", new ChunkedContent(new byte[64]), Ct);
            refused.StatusCode.Should().Be(System.Net.HttpStatusCode.RequestEntityTooLarge);
        }

        using var response = await gateway.Client.GetAsync("/x", Ct);
        response.StatusCode.Should().Be(System.Net.HttpStatusCode.OK, "the client's oversize bodies are not failures of the destination");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Reload_SwitchingResilienceWhileARequestIsInFlight_CountsItOnce(bool timeoutBefore)
    {
        // A request sent under one policy and answered after a reload turned resilience (a timeout) on or off: whoever counts
        // it (the route's transformer without resilience, the handler with it) decides by the cluster the request started
        // with, so it is counted once. Not twice: its failure alone does not eject. Not zero times: the next failure does.
        var time = new FakeTimeProvider();
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var sent = 0;
        await using var bad = await Backend.StartAsync("bad", async c =>
        {
            if (Interlocked.Increment(ref sent) == 1)
            {
                arrived.TrySetResult();
                await release.Task.WaitAsync(Ct);
            }

            c.Response.StatusCode = 500;
        });
        Dictionary<string, string> Metadata(bool timeout)
        {
            var metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "2" };
            if (timeout)
            {
                metadata[GatewayMetadata.Timeout] = "00:00:30";
            }

            return metadata;
        }

        var (routes, clusters) = Gateways.OneCluster(Metadata(timeoutBefore), GatewayPolicies.Weighted, (bad, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);
        var cluster = Cluster(gateway);
        var destination = cluster.DestinationsState.AllDestinations.Single();

        var first = gateway.Client.GetAsync("/x", Ct);
        await arrived.Task.WaitAsync(Ct);
        var (routes2, clusters2) = Gateways.OneCluster(Metadata(!timeoutBefore), GatewayPolicies.Weighted, (bad, null));
        gateway.Services.GetRequiredService<InMemoryConfigProvider>().Update(routes2, clusters2);
        Waits.Until(() => cluster.Model.Config.Metadata!.ContainsKey(GatewayMetadata.Timeout) != timeoutBefore, "the reload applies");
        release.SetResult();
        using (var response = await first)
        {
            response.StatusCode.Should().Be(System.Net.HttpStatusCode.InternalServerError);
        }

        destination.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, "the request in flight is counted once");

        await Send(gateway.Client, 1);
        bad.Hits.Should().Be(2);
        destination.Health.Passive.Should().Be(DestinationHealth.Unhealthy, "the request in flight was counted, so this second failure in a row ejects");
    }

    /// <summary>A body of unknown length, so it goes chunked and only the server's limit on what it reads can stop it.</summary>
    private sealed class ChunkedContent(byte[] body) : HttpContent
    {
        protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) => stream.WriteAsync(body).AsTask();

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    /// <summary>An address on which nothing listens: a port that was free a moment ago.</summary>
    internal static async Task<string> DeadAddressAsync()
    {
        await Task.Yield();
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return $"http://127.0.0.1:{port}";
    }

    internal static ClusterState Cluster(KestrelHost gateway)
    {
        gateway.Services.GetRequiredService<IProxyStateLookup>().TryGetCluster("c", out var cluster).Should().BeTrue();
        return cluster!;
    }

    internal static async Task Send(HttpClient client, int count)
    {
        for (var i = 0; i < count; i++)
        {
            using var response = await client.GetAsync("/x", Ct);
        }
    }
}
