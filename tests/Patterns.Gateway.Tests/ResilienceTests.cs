using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Time.Testing;
using Patterns.Gateway.Resilience;
using Yarp.ReverseProxy.Configuration;

namespace Patterns.Gateway.Tests;

public sealed class ResilienceTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    internal static Task Unavailable(HttpContext c)
    {
        c.Response.StatusCode = 503;
        return Task.CompletedTask;
    }

    [Fact]
    public async Task Retry_IdempotentRequestTo503Destination_SucceedsOnAnotherDestination()
    {
        await using var a = await Backend.StartAsync("a");
        await using var b = await Backend.StartAsync("b");
        await using var bad = await Backend.StartAsync("bad", Unavailable);
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = "1" }, GatewayPolicies.Weighted, (a, null), (b, null), (bad, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);

        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 30; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            statuses.Add(response.StatusCode);
        }

        statuses.Should().AllBeEquivalentTo(HttpStatusCode.OK);
        bad.Hits.Should().Be(10);
        (a.Hits + b.Hits).Should().Be(30);
    }

    [Fact]
    public async Task Retry_NeverTheSameDestinationTwiceInARow()
    {
        await using var good = await Backend.StartAsync("good");
        await using var bad = await Backend.StartAsync("bad", Unavailable);
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = "3" }, GatewayPolicies.Weighted, (good, null), (bad, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);

        for (var i = 0; i < 20; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        bad.Hits.Should().Be(10, "each request balanced to bad is retried once, on good");
        good.Hits.Should().Be(20);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public async Task Retry_EveryDestinationFailing_MakesExactlyOnePlusMaxRetriesAttemptsAlternating(int maxRetries)
    {
        // The first attempt goes out before any retry state exists; the retries then run in Polly's retry strategy.
        await using var a = await Backend.StartAsync("a", Unavailable);
        await using var b = await Backend.StartAsync("b", Unavailable);
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = maxRetries.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            GatewayPolicies.Weighted, (a, null), (b, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);

        using var response = await gateway.Client.GetAsync("/x", Ct);

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        (a.Hits + b.Hits).Should().Be(1 + maxRetries);
        Math.Abs(a.Hits - b.Hits).Should().BeLessThanOrEqualTo(1, "no destination is tried twice in a row");
    }

    [Fact]
    public async Task Retry_PostIsNotIdempotent_FailureReachesClient()
    {
        await using var bad = await Backend.StartAsync("bad", Unavailable);
        await using var good = await Backend.StartAsync("good");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = "2" }, GatewayPolicies.Weighted, (bad, null), (good, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);

        using var response = await gateway.Client.PostAsync("/x", new StringContent("order"), Ct);

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        bad.Hits.Should().Be(1);
        good.Hits.Should().Be(0);
    }

    [Fact]
    public async Task Retry_PutWithBodyWithinLimit_ReplaysBodyOnAnotherDestination()
    {
        await using var bad = await Backend.StartAsync("bad", Unavailable);
        await using var good = await Backend.StartAsync("good");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = "1", [GatewayMetadata.RetryMaxBufferedBodyBytes] = "100" },
            GatewayPolicies.Weighted, (bad, null), (good, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);

        using var response = await gateway.Client.PutAsync("/items/1", new StringContent("{\"name\":\"lamp\"}"), Ct);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        (await response.Content.ReadAsStringAsync(Ct)).Should().Be("good");
        bad.Received.Single().Body.Should().Be("{\"name\":\"lamp\"}");
        good.Received.Single().Body.Should().Be("{\"name\":\"lamp\"}");
        good.Received.Single().Path.Should().Be("/items/1");
    }

    [Theory]
    [InlineData(false, "the request body of 30 bytes is larger than Patterns.Retry.MaxBufferedBodyBytes (8 bytes), so it cannot be sent again.")]
    [InlineData(true, "the streamed request body is larger than Patterns.Retry.MaxBufferedBodyBytes (8 bytes), so it cannot be sent again.")]
    public async Task Retry_PutWithBodyOverLimit_SentOnceAndRetryRefusedWithReason(bool chunked, string reason)
    {
        await using var bad = await Backend.StartAsync("bad", Unavailable);
        await using var good = await Backend.StartAsync("good");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = "1", [GatewayMetadata.RetryMaxBufferedBodyBytes] = "8" },
            GatewayPolicies.Weighted, (bad, null), (good, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);
        const string Body = "a body longer than eight bytes";

        using var response = await gateway.Client.PutAsync("/items/1", chunked ? new ChunkedContent(Body) : new StringContent(Body), Ct);

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        response.Headers.GetValues(ResilienceHandler.RetryRefusedHeader).Single().Should().Be(reason);

        // A streamed body: the bytes read while looking for its end go first, then the rest.
        bad.Received.Single().Body.Should().Be(Body);
        good.Hits.Should().Be(0);
    }

    [Fact]
    public async Task Retry_ChunkedPutWithinLimit_BufferedAndReplayedOnAnotherDestination()
    {
        await using var bad = await Backend.StartAsync("bad", Unavailable);
        await using var good = await Backend.StartAsync("good");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = "1", [GatewayMetadata.RetryMaxBufferedBodyBytes] = "1000" },
            GatewayPolicies.Weighted, (bad, null), (good, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);
        var body = string.Concat(Enumerable.Range(0, 100).Select(i => (char)('a' + (i % 26))));

        using var response = await gateway.Client.PutAsync("/items/1", new ChunkedContent(body), Ct);

        response.StatusCode.Should().Be(HttpStatusCode.OK);
        (await response.Content.ReadAsStringAsync(Ct)).Should().Be("good");
        response.Headers.Contains(ResilienceHandler.RetryRefusedHeader).Should().BeFalse();
        var first = bad.Received.Single();
        first.Body.Should().Be(body);
        first.Headers.TransferEncoding.ToString().Should().Be("chunked", "the client streamed the body and the first attempt streams it on");
        good.Received.Single().Body.Should().Be(body);
    }

    [Fact]
    public async Task Retry_ChunkedPutToUnreachableDestination_FailsOverWithTheWholeBody()
    {
        await using var good = await Backend.StartAsync("good");
        var route = new RouteConfig { RouteId = "all", ClusterId = "c", Match = new RouteMatch { Path = "{**rest}" } };
        var cluster = new ClusterConfig
        {
            ClusterId = "c",
            LoadBalancingPolicy = GatewayPolicies.Weighted,
            Metadata = new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = "1" },
            Destinations = new Dictionary<string, DestinationConfig>
            {
                ["dead"] = new() { Address = ClosedPortAddress() },
                ["good"] = new() { Address = good.Address },
            },
        };
        await using var gateway = await Gateways.FromCodeAsync([route], [cluster]);

        // Two requests: the weighted round robin sends one of them to the dead destination first.
        for (var i = 0; i < 2; i++)
        {
            using var response = await gateway.Client.PutAsync($"/items/{i}", new ChunkedContent($"payload number {i} sent in pieces"), Ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        good.Received.Select(r => (r.Path, r.Body)).Should().BeEquivalentTo(
            [("/items/0", "payload number 0 sent in pieces"), ("/items/1", "payload number 1 sent in pieces")]);
    }

    private static string ClosedPortAddress()
    {
        var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return $"http://127.0.0.1:{port}";
    }

    /// <summary>A body of unknown length, written in small pieces: the client sends it chunked.</summary>
    private sealed class ChunkedContent(string text) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var bytes = System.Text.Encoding.UTF8.GetBytes(text);
            for (var offset = 0; offset < bytes.Length; offset += 7)
            {
                await stream.WriteAsync(bytes.AsMemory(offset, Math.Min(7, bytes.Length - offset)));
                await stream.FlushAsync();
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    [Fact]
    public async Task Retry_BudgetExhausted_FailureReachesClient()
    {
        await using var bad = await Backend.StartAsync("bad", Unavailable);
        await using var good = await Backend.StartAsync("good");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string>
            {
                [GatewayMetadata.RetryMaxRetries] = "1",
                [GatewayMetadata.RetryBudgetPercent] = "20",
                [GatewayMetadata.RetryMinConcurrency] = "0",
            },
            GatewayPolicies.Weighted, (bad, null), (good, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);

        // One request at a time: 20% of one active request allows no retry in flight.
        using var response = await gateway.Client.GetAsync("/x", Ct);

        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        good.Hits.Should().Be(0);
    }

    [Fact]
    public void RetryBudget_AllowsShareOfActiveRequestsWithFloor()
    {
        var budget = new RetryBudget();
        for (var i = 0; i < 10; i++)
        {
            budget.Enter();
        }

        budget.TryAcquire(20, 0).Should().BeTrue();
        budget.TryAcquire(20, 0).Should().BeTrue();
        budget.TryAcquire(20, 0).Should().BeFalse("20% of 10 active requests is 2 retries in flight");
        budget.Release();
        budget.TryAcquire(20, 0).Should().BeTrue();
        budget.TryAcquire(20, 3).Should().BeTrue("the floor of 3 allows a third");
        budget.TryAcquire(20, 3).Should().BeFalse();
    }

    [Fact]
    public void RetryBudget_EnteredOnOneThreadLeftOnAnother_CountsBackToZero()
    {
        // A request may leave on another core than it entered on (its continuation runs elsewhere): one slot goes up, another
        // down, and the sum is what counts. The leaving thread may even run first, taking the sum below zero for a while.
        var budget = new RetryBudget();
        var entering = new Thread(() =>
        {
            for (var i = 0; i < 10_000; i++)
            {
                budget.Enter();
            }
        });
        var leaving = new Thread(() =>
        {
            for (var i = 0; i < 10_000; i++)
            {
                budget.Exit();
            }
        });
        entering.Start();
        leaving.Start();
        entering.Join();
        leaving.Join();

        budget.Active.Should().Be(0);
        budget.Enter();
        budget.Active.Should().Be(1, "the sum is back at zero, not below it");
        budget.Exit();

        // Requests entered on one thread and left on another, one after the other.
        var entered = new Thread(() =>
        {
            for (var i = 0; i < 100; i++)
            {
                budget.Enter();
            }
        });
        entered.Start();
        entered.Join();
        budget.Active.Should().Be(100);
        var left = new Thread(() =>
        {
            for (var i = 0; i < 100; i++)
            {
                budget.Exit();
            }
        });
        left.Start();
        left.Join();
        budget.Active.Should().Be(0);
        budget.TryAcquire(20, 0).Should().BeFalse("no request is active, so no retry is allowed above a floor of 0");
    }

    [Fact]
    public async Task Hedging_SlowPrimary_SecondDestinationAnswersAfterDelay()
    {
        var time = new FakeTimeProvider();
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var slow = await Backend.StartAsync("slow", async c =>
        {
            arrived.TrySetResult();
            await release.Task.WaitAsync(c.RequestAborted);
            await c.Response.WriteAsync("slow");
        });
        await using var fast = await Backend.StartAsync("fast");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.HedgingDelay] = "00:00:01" }, GatewayPolicies.Weighted, (slow, null), (fast, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);

        var call = gateway.Client.GetStringAsync("/x", Ct);
        await arrived.Task.WaitAsync(Waits.Bound, Ct);
        fast.Hits.Should().Be(0);

        // Polly arms the hedging delay on its own thread, possibly just after the request reached the backend:
        // advance virtual time until the hedge has been sent.
        await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(1), call);
        var body = await call.WaitAsync(Waits.Bound, Ct);
        release.TrySetResult();

        body.Should().Be("fast");
        slow.Hits.Should().Be(1);
        fast.Hits.Should().Be(1);
    }

    [Fact]
    public async Task CircuitBreaker_OpensPerDestination_ThenLetsOneTrialThrough()
    {
        var time = new FakeTimeProvider();
        await using var bad = await Backend.StartAsync("bad", c => { c.Response.StatusCode = 500; return Task.CompletedTask; });
        await using var good = await Backend.StartAsync("good");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string>
            {
                [GatewayMetadata.RetryMaxRetries] = "1",
                [GatewayMetadata.CircuitBreakerFailureRatio] = "0.5",
                [GatewayMetadata.CircuitBreakerMinimumThroughput] = "2",
                [GatewayMetadata.CircuitBreakerBreakDuration] = "00:00:05",
            },
            GatewayPolicies.Weighted, (bad, null), (good, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);

        for (var i = 0; i < 20; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        bad.Hits.Should().Be(2, "the circuit opened after two failures; later attempts fail fast and go to good");
        time.Advance(TimeSpan.FromSeconds(5));
        for (var i = 0; i < 4; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK);
        }

        bad.Hits.Should().Be(3, "one trial request goes through the half-open circuit and fails, so it opens again");
    }

    [Fact]
    public async Task AttemptTimeout_SlowDestination_RetriedElsewhere()
    {
        var time = new FakeTimeProvider();
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var slow = await Backend.StartAsync("slow", async c =>
        {
            arrived.TrySetResult();
            await Task.Delay(Timeout.Infinite, c.RequestAborted);
        });
        await using var fast = await Backend.StartAsync("fast");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RetryMaxRetries] = "1", [GatewayMetadata.AttemptTimeout] = "00:00:02" },
            GatewayPolicies.Weighted, (slow, null), (fast, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);

        var call = gateway.Client.GetStringAsync("/x", Ct);
        await arrived.Task.WaitAsync(Waits.Bound, Ct);

        // The attempt's timer is armed before the request is sent, so one step fires it; a second could time out the retry.
        time.Advance(TimeSpan.FromSeconds(2));

        (await call.WaitAsync(Waits.Bound, Ct)).Should().Be("fast");
    }

    [Fact]
    public async Task Timeout_NoRetry_Answers504()
    {
        var time = new FakeTimeProvider();
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var slow = await Backend.StartAsync("slow", async c =>
        {
            arrived.TrySetResult();
            await Task.Delay(Timeout.Infinite, c.RequestAborted);
        });
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.Timeout] = "00:00:03" }, GatewayPolicies.Weighted, (slow, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);

        var call = gateway.Client.GetAsync("/x", Ct);
        await arrived.Task.WaitAsync(Waits.Bound, Ct);
        time.Advance(TimeSpan.FromSeconds(3));
        using var response = await call.WaitAsync(Waits.Bound, Ct);

        response.StatusCode.Should().Be(HttpStatusCode.GatewayTimeout);
    }
}
