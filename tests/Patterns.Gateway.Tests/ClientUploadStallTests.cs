using System.Net;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Time.Testing;
using Patterns.Gateway.Resilience;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Tests;

/// <summary>
/// A client that sends part of its request body and then stalls until a timeout ends the request: the gateway was waiting
/// on the client, not on the destination, so neither the circuit breaker nor outlier detection counts it, whether the gateway
/// speaks HTTP/1.1 or HTTP/2 (h2c) to the destination.
/// </summary>
public sealed class ClientUploadStallTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>
    /// <paramref name="outgoing"/>: "h1" or "h2" to the destination. <paramref name="timeout"/>: "request" (the cluster's
    /// <c>Patterns.Timeout</c> on a fake clock, with a breaker and outlier detection), "activity" (YARP's activity timeout,
    /// with a breaker and outlier detection) or "activity-outlier" (YARP's activity timeout with outlier detection alone, which
    /// the route's transformer counts).
    /// </summary>
    [Theory]
    [InlineData("h1", "request")]
    [InlineData("h2", "request")]
    [InlineData("h1", "activity")]
    [InlineData("h2", "activity")]
    [InlineData("h1", "activity-outlier")]
    [InlineData("h2", "activity-outlier")]
    public async Task ClientStallingMidUpload_UntilTheTimeout_IsNotCounted(string outgoing, string timeout)
    {
        var time = new FakeTimeProvider();
        var arrivals = Channel.CreateUnbounded<bool>();
        var hits = 0;
        await using var backend = await KestrelHost.StartAsync(
            _ => { },
            app => app.Run(async c =>
            {
                Interlocked.Increment(ref hits);
                if (c.Request.Headers.ContainsKey("X-Stall"))
                {
                    arrivals.Writer.TryWrite(true);
                }

                var buffer = new byte[4096];
                var read = 0;
                int n;
                while ((n = await c.Request.Body.ReadAsync(buffer, c.RequestAborted)) > 0)
                {
                    read += n;
                }

                await c.Response.WriteAsync("whole " + read, c.RequestAborted);
            }),
            outgoing == "h2" ? HttpProtocols.Http2 : HttpProtocols.Http1);

        var metadata = UploadSetup.Metadata(breaker: timeout != "activity-outlier", timeout: timeout == "request");

        // The activity timeout is long enough for the first request on a busy machine (JIT, connecting): it runs on real time.
        // Kestrel's own minimum body data rate is off: only the timeout under test ends the request.
        HttpContext? current = null;
        await using var gateway = await UploadSetup.StartGatewayAsync(
            backend, metadata, time, UploadSetup.Outgoing(outgoing), timeout == "request" ? null : TimeSpan.FromSeconds(5), c => Volatile.Write(ref current, c));
        var destination = UploadSetup.Destination(gateway);
        using var client = UploadSetup.Client(gateway);

        // One whole upload first: the connection to the destination is open before the stalls, so an activity timeout cannot
        // fire while the gateway is still connecting.
        (await SendAsync(client, new StringContent("warm")).WaitAsync(Waits.Bound, Ct)).Should().Be((HttpStatusCode.OK, "whole 4"));

        // One stall would already open the circuit (a success and a failure: 0.5 of 2 attempts) and eject (one failure):
        // two on the fake clock, one on real time.
        for (var i = 0; i < (timeout == "request" ? 2 : 1); i++)
        {
            var content = new PartialContent();
            var call = SendAsync(client, content, stall: true);
            if (timeout == "request")
            {
                // The client sent the first part, the request reached the destination, and the gateway waits for the client's
                // next bytes (the destination gets the first part only with the rest: the forwarder's writes are buffered);
                // then the request's timeout passes while the client sends nothing.
                await content.Sent.WaitAsync(Waits.Bound, Ct);
                await arrivals.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
                Waits.Until(
                    () => Volatile.Read(ref current)?.Request.Body is ClientBodyStream { BytesRead: PartialContent.PartLength, WaitingOnClient: true },
                    "the gateway read the first part and waits for the client's next bytes");
                await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(3), call);
            }

            // YARP answers 408 when its activity timeout ended the body copy (it blames the side it was reading from) before the
            // send failed, 504 when the send failed first; the request's timeout is the gateway's 504.
            var (status, _) = await call.WaitAsync(Waits.Bound, Ct);
            status.Should().BeOneOf([HttpStatusCode.GatewayTimeout, HttpStatusCode.RequestTimeout], "the request timed out while the client's body was still coming");
        }

        var (finalStatus, body) = await SendAsync(client, new StringContent("whole")).WaitAsync(Waits.Bound, Ct);
        finalStatus.Should().Be(HttpStatusCode.OK, "uploads the client stalled opened no circuit and ejected nothing");
        body.Should().Be("whole 5");
        destination.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy);
        if (timeout == "request")
        {
            Volatile.Read(ref hits).Should().Be(4, "the warm-up, two stalled uploads and the last one reached the destination");
        }
    }

    /// <summary>
    /// The other side of the stall: while the gateway waits for the client's next bytes, the destination resets the stream
    /// (h2c). That is the destination's failure, not a stalled upload: one failure ejects. <paramref name="policy"/>: "breaker"
    /// (resilience, judged by the resilience handler) or "outlier" (outlier detection alone, judged by the route's transformer,
    /// where YARP reports the cancelled body copy as the client's body failing, RequestBodyClient). Over HTTP/1.1 see
    /// <see cref="UploadBlameTests"/>.
    /// </summary>
    [Theory]
    [InlineData("breaker")]
    [InlineData("outlier")]
    public async Task DestinationResettingWhileTheClientUploads_IsCounted(string policy)
    {
        var arrivals = Channel.CreateUnbounded<bool>();
        var breakOff = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await UploadSetup.StartDestinationAsync(
            "X-Stall",
            async c =>
            {
                arrivals.Writer.TryWrite(true);
                await breakOff.Task.WaitAsync(c.RequestAborted);
                c.Abort();
            },
            HttpProtocols.Http2);

        var metadata = UploadSetup.Metadata(breaker: policy == "breaker");
        HttpContext? current = null;
        await using var gateway = await UploadSetup.StartGatewayAsync(
            backend, metadata, new FakeTimeProvider(), HttpVersion.Version20, null, c => Volatile.Write(ref current, c));
        var destination = UploadSetup.Destination(gateway);
        using var client = UploadSetup.Client(gateway);
        (await SendAsync(client, new StringContent("warm")).WaitAsync(Waits.Bound, Ct)).Should().Be((HttpStatusCode.OK, "ok"));

        var content = new PartialContent();
        var call = SendAsync(client, content, stall: true);
        await content.Sent.WaitAsync(Waits.Bound, Ct);
        await arrivals.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        Waits.Until(
            () => Volatile.Read(ref current)?.Request.Body is ClientBodyStream { BytesRead: PartialContent.PartLength, WaitingOnClient: true },
            "the gateway read the first part and waits for the client's next bytes");
        breakOff.SetResult();
        var (status, _) = await call.WaitAsync(Waits.Bound, Ct);
        status.Should().NotBe(HttpStatusCode.OK);
        status.Should().NotBe(HttpStatusCode.BadRequest, "the client's request was not at fault");
        Waits.Until(() => destination.Health.Passive == DestinationHealth.Unhealthy, "the destination that broke off the request is ejected");
    }

    private static async Task<(HttpStatusCode Status, string Body)> SendAsync(HttpClient client, HttpContent content, bool stall = false)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/x")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
        if (stall)
        {
            request.Headers.Add("X-Stall", "1");
        }

        using var response = await client.SendAsync(request, Ct);
        return (response.StatusCode, await response.Content.ReadAsStringAsync(Ct));
    }

    /// <summary>A request body that sends a first part and then nothing more, until its request ends.</summary>
    private sealed class PartialContent : HttpContent
    {
        public const int PartLength = 100;

        private readonly TaskCompletionSource _sent = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Gets a task that completes once the first part is sent.</summary>
        public Task Sent => _sent.Task;

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            await stream.WriteAsync(new byte[PartLength], cancellationToken);
            await stream.FlushAsync(cancellationToken);
            _sent.TrySetResult();
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
