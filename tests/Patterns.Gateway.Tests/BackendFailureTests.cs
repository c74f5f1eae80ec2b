using System.Net;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Tests;

/// <summary>
/// What counts against a destination (outlier detection, the circuit breaker) and what does not: a destination that times out
/// or breaks off its response body failed; a client that went away, before or during the body, says nothing about it.
/// </summary>
public sealed class BackendFailureTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Dictionary<string, string> Breaker(Dictionary<string, string>? more = null)
    {
        var metadata = new Dictionary<string, string>
        {
            [GatewayMetadata.CircuitBreakerFailureRatio] = "0.5",
            [GatewayMetadata.CircuitBreakerMinimumThroughput] = "2",
            [GatewayMetadata.CircuitBreakerBreakDuration] = "00:01:00",
        };
        foreach (var (key, value) in more ?? [])
        {
            metadata[key] = value;
        }

        return metadata;
    }

    /// <summary>A backend that signals each arrival and then waits until the gateway gives up on the request.</summary>
    private static Func<HttpContext, Task> Hanging(Channel<bool> arrivals) => async c =>
    {
        arrivals.Writer.TryWrite(true);
        await Task.Delay(Timeout.Infinite, c.RequestAborted);
    };

    /// <summary>The third request, after two that timed out: answered 503 by the open circuit, without reaching the destination.</summary>
    private static async Task ThirdRequestMeetsTheOpenCircuit(KestrelHost gateway, Backend slow, Channel<bool> arrivals, Action? release = null)
    {
        var third = gateway.Client.GetAsync("/x", Ct);
        var first = await Task.WhenAny(third, arrivals.Reader.WaitToReadAsync(Ct).AsTask()).WaitAsync(Waits.Bound, Ct);
        if (first != third)
        {
            release?.Invoke();
            using var reached = await third.WaitAsync(Waits.Bound, Ct);
            throw new Xunit.Sdk.XunitException($"The third request reached the destination (answered {(int)reached.StatusCode}): the two timeouts were not counted by the circuit breaker.");
        }

        using var response = await third;
        response.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "two timeouts in two attempts opened the destination's circuit");
        slow.Hits.Should().Be(2);
    }

    [Fact]
    public async Task RequestTimeout_CountsAgainstTheDestination_OpensTheCircuit()
    {
        // The request's timeout (Patterns.Timeout) cancels the attempt under the destination's breaker: the breaker sees the
        // attempt cancelled, not a client that went away.
        var time = new FakeTimeProvider();
        var arrivals = Channel.CreateUnbounded<bool>();
        await using var slow = await Backend.StartAsync("slow", Hanging(arrivals));
        var (routes, clusters) = Gateways.OneCluster(Breaker(new() { [GatewayMetadata.Timeout] = "00:00:03" }), GatewayPolicies.Weighted, (slow, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time);

        for (var i = 0; i < 2; i++)
        {
            var call = gateway.Client.GetAsync("/x", Ct);
            await arrivals.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
            time.Advance(TimeSpan.FromSeconds(3));
            using var response = await call.WaitAsync(Waits.Bound, Ct);
            response.StatusCode.Should().Be(HttpStatusCode.GatewayTimeout);
        }

        await ThirdRequestMeetsTheOpenCircuit(gateway, slow, arrivals, () => time.Advance(TimeSpan.FromSeconds(3)));
    }

    [Fact]
    public async Task ActivityTimeout_CountsAgainstTheDestination_OpensTheCircuit()
    {
        // YARP's own timeout (the cluster's HttpRequest.ActivityTimeout, ForwarderError.RequestTimedOut) on real time: it
        // takes TimeProvider only for its telemetry, so a short timeout stands in for the clock. Whether a timed-out request
        // reached the destination or was still connecting on a slow machine, it is a timeout of the destination either way,
        // so only the answers are checked: 504 twice, then 503 from the open circuit (504 again, after the timeout, when
        // the timeouts were not counted).
        await using var slow = await Backend.StartAsync("slow", c => Task.Delay(Timeout.Infinite, c.RequestAborted));
        var (routes, clusters) = Gateways.OneCluster(Breaker(), GatewayPolicies.Weighted, (slow, null));
        clusters[0] = clusters[0] with { HttpRequest = new ForwarderRequestConfig { ActivityTimeout = TimeSpan.FromMilliseconds(200) } };
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);

        for (var i = 0; i < 2; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct);
            response.StatusCode.Should().Be(HttpStatusCode.GatewayTimeout);
        }

        using var third = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct);
        third.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "two timeouts in two attempts opened the destination's circuit");
        (await third.Content.ReadAsStringAsync(Ct)).Should().Contain("circuit");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ActivityTimeout_CountsAgainstTheDestination_Ejects(bool withBreaker)
    {
        // Without resilience the route's transformer counts it (YARP hands it no response and says RequestTimedOut); with a
        // breaker the resilience handler does.
        var arrivals = Channel.CreateUnbounded<bool>();
        await using var slow = await Backend.StartAsync("slow", Hanging(arrivals));
        var metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "2" };
        var (routes, clusters) = Gateways.OneCluster(withBreaker ? Breaker(metadata) : metadata, GatewayPolicies.Weighted, (slow, null));
        clusters[0] = clusters[0] with { HttpRequest = new ForwarderRequestConfig { ActivityTimeout = TimeSpan.FromMilliseconds(200) } };
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, new FakeTimeProvider());
        var destination = OutlierDetectionTests.Cluster(gateway).DestinationsState.AllDestinations.Single();

        for (var i = 0; i < 2; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct);
            response.StatusCode.Should().Be(HttpStatusCode.GatewayTimeout);
        }

        Waits.Until(() => destination.Health.Passive == DestinationHealth.Unhealthy, "two timeouts in a row eject the destination");
    }

    [Fact]
    public async Task ClientGivingUp_WhileTheDestinationWaits_IsNotCounted()
    {
        // Two clients that cancel while the destination is still working are two attempts the breaker must not count; the
        // next request reaches the destination.
        var arrivals = Channel.CreateUnbounded<bool>();
        var completed = Channel.CreateUnbounded<int>();
        var hang = true;
        await using var backend = await Backend.StartAsync("b", async c =>
        {
            if (Volatile.Read(ref hang))
            {
                arrivals.Writer.TryWrite(true);
                await Task.Delay(Timeout.Infinite, c.RequestAborted);
            }

            await c.Response.WriteAsync("answer", c.RequestAborted);
        });
        var (routes, clusters) = Gateways.OneCluster(Breaker(new() { [GatewayMetadata.OutlierConsecutiveFailures] = "1" }), GatewayPolicies.Weighted, (backend, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, new FakeTimeProvider(), app: a => a.Use(Signal(completed)));

        for (var i = 0; i < 2; i++)
        {
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            var call = gateway.Client.GetAsync("/x", cancel.Token);
            await arrivals.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
            await cancel.CancelAsync();
            await call.Invoking(c => c).Should().ThrowAsync<OperationCanceledException>();
            await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        }

        Volatile.Write(ref hang, false);
        using var response = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK, "clients that gave up are no failures of the destination");
        backend.Hits.Should().Be(3);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task DestinationBreakingOffTheBody_CountsAsFailure(bool withTimeout)
    {
        // Headers and part of the body, then the connection is aborted (ForwarderError.ResponseBodyDestination): the answer
        // counted when its headers came is a failure after all. Two in a row eject. The destination breaks off only once the
        // client has the first part, so the gateway's response has started (else YARP would still answer 502).
        var completed = Channel.CreateUnbounded<int>();
        var breakOff = Channel.CreateUnbounded<bool>();
        await using var broken = await Backend.StartAsync("broken", async c =>
        {
            c.Response.ContentLength = 1000;
            await c.Response.WriteAsync("the first part", c.RequestAborted);
            await c.Response.Body.FlushAsync(c.RequestAborted);
            await breakOff.Reader.ReadAsync(c.RequestAborted);
            c.Abort();
        });
        var metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "2" };
        if (withTimeout)
        {
            metadata[GatewayMetadata.Timeout] = "00:00:30";
        }

        var (routes, clusters) = Gateways.OneCluster(metadata, GatewayPolicies.Weighted, (broken, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, new FakeTimeProvider(), app: a => a.Use(Signal(completed)));
        var destination = OutlierDetectionTests.Cluster(gateway).DestinationsState.AllDestinations.Single();

        for (var i = 0; i < 2; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", HttpCompletionOption.ResponseHeadersRead, Ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK, "the headers came through before the body broke off");
            var stream = await response.Content.ReadAsStreamAsync(Ct);
            (await stream.ReadAsync(new byte[64], Ct)).Should().BePositive("the first part of the body came through");
            breakOff.Writer.TryWrite(true);
            await stream.Invoking(s => s.CopyToAsync(Stream.Null, Ct)).Should().ThrowAsync<IOException>("the body ended before its length");
            await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        }

        broken.Hits.Should().Be(2);
        Waits.Until(() => destination.Health.Passive == DestinationHealth.Unhealthy, "two bodies broken off in a row eject the destination");
    }

    [Fact]
    public async Task DestinationBreakingOffTheBody_OpensTheCircuit()
    {
        // The same broken-off bodies under a circuit breaker that opens only when every attempt in its window failed
        // (FailureRatio 1, MinimumThroughput 2): two answers whose bodies broke off are two failures in two attempts, so the
        // third request fails fast with 503 without reaching the destination. Counted by the headers alone they would be two
        // successes; counted as a success and then a failure, 2 of 4, and the circuit would stay closed either way.
        var completed = Channel.CreateUnbounded<int>();
        var breakOff = Channel.CreateUnbounded<bool>();
        await using var broken = await Backend.StartAsync("broken", async c =>
        {
            c.Response.ContentLength = 1000;
            await c.Response.WriteAsync("the first part", c.RequestAborted);
            await c.Response.Body.FlushAsync(c.RequestAborted);
            await breakOff.Reader.ReadAsync(c.RequestAborted);
            c.Abort();
        });
        var metadata = Breaker();
        metadata[GatewayMetadata.CircuitBreakerFailureRatio] = "1";
        var (routes, clusters) = Gateways.OneCluster(metadata, GatewayPolicies.Weighted, (broken, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, new FakeTimeProvider(), app: a => a.Use(Signal(completed)));

        for (var i = 0; i < 2; i++)
        {
            using var response = await gateway.Client.GetAsync("/x", HttpCompletionOption.ResponseHeadersRead, Ct);
            response.StatusCode.Should().Be(HttpStatusCode.OK, "the headers came through before the body broke off");
            var stream = await response.Content.ReadAsStreamAsync(Ct);
            (await stream.ReadAsync(new byte[64], Ct)).Should().BePositive("the first part of the body came through");
            breakOff.Writer.TryWrite(true);
            await stream.Invoking(s => s.CopyToAsync(Stream.Null, Ct)).Should().ThrowAsync<IOException>("the body ended before its length");
            await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        }

        using var third = await gateway.Client.GetAsync("/x", HttpCompletionOption.ResponseHeadersRead, Ct).WaitAsync(Waits.Bound, Ct);
        third.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "two bodies broken off in two attempts opened the destination's circuit");
        (await third.Content.ReadAsStringAsync(Ct)).Should().Contain("circuit");
        broken.Hits.Should().Be(2);
    }

    [Fact]
    public async Task LongStreamEndingWhileHalfOpen_DoesNotDecideTheTrial()
    {
        // A stream that began while the circuit was closed is held by the breaker until it ends. It ends (the client leaves)
        // while the circuit is half-open and its trial is still in flight: it must not close the circuit (Polly closes a
        // half-open circuit on any success), so a request meanwhile still meets the half-open circuit, and the failed trial
        // opens it again.
        var time = new FakeTimeProvider();
        var completed = Channel.CreateUnbounded<int>();
        var streaming = Channel.CreateUnbounded<bool>();
        var trialArrived = Channel.CreateUnbounded<bool>();
        var trialAnswer = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await Backend.StartAsync("b", async c =>
        {
            switch (c.Request.Path.Value)
            {
                case "/stream":
                    await c.Response.WriteAsync("data: first\n\n", c.RequestAborted);
                    await c.Response.Body.FlushAsync(c.RequestAborted);
                    streaming.Writer.TryWrite(true);
                    await Task.Delay(Timeout.Infinite, c.RequestAborted);
                    break;
                case "/trial":
                    trialArrived.Writer.TryWrite(true);
                    await trialAnswer.Task.WaitAsync(c.RequestAborted);
                    c.Response.StatusCode = 500;
                    break;
                case "/fail":
                    c.Response.StatusCode = 500;
                    break;
                default:
                    await c.Response.WriteAsync("ok", c.RequestAborted);
                    break;
            }
        });
        var (routes, clusters) = Gateways.OneCluster(Breaker(), GatewayPolicies.Weighted, (backend, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, time, app: a => a.Use(Signal(completed)));

        using var leave = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        using var stream = await gateway.Client.GetAsync("/stream", HttpCompletionOption.ResponseHeadersRead, leave.Token);
        await streaming.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        var body = await stream.Content.ReadAsStreamAsync(leave.Token);
        (await body.ReadAsync(new byte[64], leave.Token)).Should().BePositive("the stream's first event came through");

        for (var i = 0; i < 2; i++)
        {
            using var failed = await gateway.Client.GetAsync("/fail", Ct).WaitAsync(Waits.Bound, Ct);
            failed.StatusCode.Should().Be(HttpStatusCode.InternalServerError);
            await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        }

        using (var open = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct))
        {
            open.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "two failures in two attempts opened the circuit");
            await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        }

        time.Advance(TimeSpan.FromMinutes(1));
        var trial = gateway.Client.GetAsync("/trial", Ct);
        await trialArrived.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);

        // The client leaves the stream (a success for the breaker) while the trial is in flight.
        var pending = body.ReadAsync(new byte[64], leave.Token).AsTask();
        await leave.CancelAsync();
        await pending.Invoking(p => p).Should().ThrowAsync<OperationCanceledException>();
        await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);

        using (var during = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct))
        {
            during.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "the circuit is half-open until its trial ends: the stream's end did not close it");
            await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        }

        trialAnswer.SetResult();
        using (var trialResponse = await trial.WaitAsync(Waits.Bound, Ct))
        {
            trialResponse.StatusCode.Should().Be(HttpStatusCode.InternalServerError);
        }

        await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        using var after = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct);
        after.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable, "the failed trial opened the circuit again, and the stream counted for nothing");
        backend.Hits.Should().Be(4, "the stream, two failures and the trial reached the destination, nothing else");
    }

    [Fact]
    public async Task ClientAbortingMidBody_DoesNotOpenTheCircuit()
    {
        // Downloads the client leaves in the middle (ResponseBodyClient or ResponseBodyCanceled) are no failures of the
        // destination: with FailureRatio 1 and MinimumThroughput 2, two of them counted would open the circuit.
        var completed = Channel.CreateUnbounded<int>();
        var sentPart = Channel.CreateUnbounded<bool>();
        var whole = false;
        await using var backend = await Backend.StartAsync("b", async c =>
        {
            if (Volatile.Read(ref whole))
            {
                await c.Response.WriteAsync("whole", c.RequestAborted);
                return;
            }

            await c.Response.WriteAsync("the first part", c.RequestAborted);
            await c.Response.Body.FlushAsync(c.RequestAborted);
            sentPart.Writer.TryWrite(true);
            await Task.Delay(Timeout.Infinite, c.RequestAborted);
        });
        var metadata = Breaker();
        metadata[GatewayMetadata.CircuitBreakerFailureRatio] = "1";
        var (routes, clusters) = Gateways.OneCluster(metadata, GatewayPolicies.Weighted, (backend, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, new FakeTimeProvider(), app: a => a.Use(Signal(completed)));

        for (var i = 0; i < 2; i++)
        {
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            using var response = await gateway.Client.GetAsync("/x", HttpCompletionOption.ResponseHeadersRead, cancel.Token);
            await sentPart.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
            var stream = await response.Content.ReadAsStreamAsync(cancel.Token);
            var buffer = new byte[64];
            (await stream.ReadAsync(buffer, cancel.Token)).Should().BePositive("the first part of the body came through");
            var pending = stream.ReadAsync(buffer, cancel.Token).AsTask();
            await cancel.CancelAsync();
            await pending.Invoking(p => p).Should().ThrowAsync<OperationCanceledException>();
            await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        }

        Volatile.Write(ref whole, true);
        (await gateway.Client.GetStringAsync("/x", Ct).WaitAsync(Waits.Bound, Ct)).Should().Be("whole", "downloads the client left opened no circuit");
        backend.Hits.Should().Be(3);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ClientAbortingMidBody_IsNotCounted(bool withTimeout)
    {
        // The destination sends part of the body and waits; the client reads it and goes away. One failure would eject here.
        var completed = Channel.CreateUnbounded<int>();
        var sentPart = Channel.CreateUnbounded<bool>();
        var whole = false;
        await using var backend = await Backend.StartAsync("b", async c =>
        {
            if (Volatile.Read(ref whole))
            {
                await c.Response.WriteAsync("whole", c.RequestAborted);
                return;
            }

            await c.Response.WriteAsync("the first part", c.RequestAborted);
            await c.Response.Body.FlushAsync(c.RequestAborted);
            sentPart.Writer.TryWrite(true);
            await Task.Delay(Timeout.Infinite, c.RequestAborted);
        });
        var metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "1" };
        if (withTimeout)
        {
            metadata[GatewayMetadata.Timeout] = "00:00:30";
        }

        var (routes, clusters) = Gateways.OneCluster(metadata, GatewayPolicies.Weighted, (backend, null));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters, new FakeTimeProvider(), app: a => a.Use(Signal(completed)));
        var destination = OutlierDetectionTests.Cluster(gateway).DestinationsState.AllDestinations.Single();

        using (var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct))
        {
            using var response = await gateway.Client.GetAsync("/x", HttpCompletionOption.ResponseHeadersRead, cancel.Token);
            await sentPart.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
            var stream = await response.Content.ReadAsStreamAsync(cancel.Token);
            var buffer = new byte[64];
            (await stream.ReadAsync(buffer, cancel.Token)).Should().BePositive("the first part of the body came through");

            // The rest never comes: cancelling the pending read tears the connection down.
            var pending = stream.ReadAsync(buffer, cancel.Token).AsTask();
            await cancel.CancelAsync();
            await pending.Invoking(p => p).Should().ThrowAsync<OperationCanceledException>();
        }

        await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        destination.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, "a client that went away mid-body says nothing about the destination");
        Volatile.Write(ref whole, true);
        (await gateway.Client.GetStringAsync("/x", Ct).WaitAsync(Waits.Bound, Ct)).Should().Be("whole");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task FiveHundredWhoseBodyBreaksOffBeforeAnyByte_CountsOnce(bool withTimeout)
    {
        // The destination answers 503 with a declared body, then breaks off before any byte of it. The 503 is one failure,
        // counted when its headers came; the broken-off body is the same answer, not a second failure (YARP answers 502 and
        // reports ResponseBodyDestination, the gateway's response not started). Two failures would eject here.
        var completed = Channel.CreateUnbounded<int>();
        var logs = new GatewayLogs();
        var headersReached = logs.WaitForAsync("response 503");
        await using var broken = await Backend.StartAsync("broken", async c =>
        {
            c.Response.StatusCode = 503;
            c.Response.ContentLength = 1000;
            await c.Response.StartAsync(c.RequestAborted);
            await c.Response.Body.FlushAsync(c.RequestAborted);
            await headersReached.WaitAsync(c.RequestAborted);
            c.Abort();
        });
        var metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "2" };
        if (withTimeout)
        {
            metadata[GatewayMetadata.Timeout] = "00:00:30";
        }

        var (routes, clusters) = Gateways.OneCluster(metadata, GatewayPolicies.Weighted, (broken, null));
        await using var gateway = await Gateways.FromCodeAsync(
            routes, clusters, new FakeTimeProvider(), services: b => b.Logging.AddProvider(logs), app: a => a.Use(Signal(completed)));

        using var response = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct);
        response.StatusCode.Should().Be(HttpStatusCode.BadGateway, "the body broke off before the gateway's response started");
        await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        logs.Of(1301).Should().BeEmpty("one answer, a 503 whose body broke off, is one failure");
    }

    [Fact]
    public async Task StreamEndedByTheClient_EndsARunOfFailures()
    {
        // A stream (server-sent events, a long download) usually ends when its client goes away. Its answer and everything it
        // sent were the destination's success, so it ends a run of failures: 503, a stream the client leaves, 503 is no run
        // of two, which would eject here.
        var completed = Channel.CreateUnbounded<int>();
        var logs = new GatewayLogs();
        var sent = Channel.CreateUnbounded<bool>();
        var request = 0;
        await using var backend = await Backend.StartAsync("b", async c =>
        {
            if (Interlocked.Increment(ref request) != 2)
            {
                c.Response.StatusCode = 503;
                return;
            }

            c.Response.ContentType = "text/event-stream";
            await c.Response.WriteAsync("data: one\n\n", c.RequestAborted);
            await c.Response.Body.FlushAsync(c.RequestAborted);
            sent.Writer.TryWrite(true);
            await Task.Delay(Timeout.Infinite, c.RequestAborted);
        });
        var metadata = new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "2" };
        var (routes, clusters) = Gateways.OneCluster(metadata, GatewayPolicies.Weighted, (backend, null));
        await using var gateway = await Gateways.FromCodeAsync(
            routes, clusters, new FakeTimeProvider(), services: b => b.Logging.AddProvider(logs), app: a => a.Use(Signal(completed)));

        using (var first = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct))
        {
            first.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        }

        await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        using (var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct))
        {
            using var stream = await gateway.Client.GetAsync("/x", HttpCompletionOption.ResponseHeadersRead, cancel.Token);
            await sent.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
            var body = await stream.Content.ReadAsStreamAsync(cancel.Token);
            (await body.ReadAsync(new byte[64], cancel.Token)).Should().BePositive("the first event came through");
            var pending = body.ReadAsync(new byte[64], cancel.Token).AsTask();
            await cancel.CancelAsync();
            await pending.Invoking(p => p).Should().ThrowAsync<OperationCanceledException>();
        }

        await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        using (var third = await gateway.Client.GetAsync("/x", Ct).WaitAsync(Waits.Bound, Ct))
        {
            third.StatusCode.Should().Be(HttpStatusCode.ServiceUnavailable);
        }

        await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        logs.Of(1301).Should().BeEmpty("the stream between the two 503s ended the run");
    }

    /// <summary>A gateway middleware around everything, the proxy included, that reports each finished request's status.</summary>
    private static Func<HttpContext, RequestDelegate, Task> Signal(Channel<int> completed) => async (context, next) =>
    {
        try
        {
            await next(context);
        }
        finally
        {
            completed.Writer.TryWrite(context.Response.StatusCode);
        }
    };
}
