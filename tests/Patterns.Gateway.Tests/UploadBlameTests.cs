using System.Net;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Time.Testing;
using Patterns.Gateway.Resilience;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Tests;

/// <summary>
/// Who is to blame when an upload ends early, over HTTP/1.1 to the destination, where the gateway's client reads the
/// destination's answer only after the whole body has gone: a destination that closes its connection unanswered while the
/// client's upload is stalled is at fault; one that answered first (a 413, or a 408 because the body came too slowly for it)
/// is not, whether the attempt then ends by the gateway's timeout or by a write to the closed connection.
/// </summary>
public sealed class UploadBlameTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>
    /// <paramref name="timeout"/>: "request" (<c>Patterns.Timeout</c> on a fake clock, with a breaker and outlier detection) or
    /// "activity" (YARP's activity timeout with outlier detection alone). <paramref name="destination"/>: "close" (the destination
    /// aborts its connection, unanswered, while the client's upload is stalled) or "answer" (it answers 413 at once and waits).
    /// </summary>
    [Theory]
    [InlineData("request", "close")]
    [InlineData("activity", "close")]
    [InlineData("request", "answer")]
    [InlineData("activity", "answer")]
    public async Task DestinationEndingAStalledHttp11Upload_IsJudgedByWhatItDid(string timeout, string destination)
    {
        var time = new FakeTimeProvider();
        var arrivals = Channel.CreateUnbounded<bool>();
        var act = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await UploadSetup.StartDestinationAsync(
            "X-Stall",
            async c =>
            {
                if (destination == "answer")
                {
                    c.Response.StatusCode = StatusCodes.Status413PayloadTooLarge;
                    await c.Response.CompleteAsync();
                    arrivals.Writer.TryWrite(true);
                    await Task.Delay(Timeout.Infinite, c.RequestAborted).ContinueWith(_ => { }, TaskScheduler.Default);
                    return;
                }

                arrivals.Writer.TryWrite(true);
                await act.Task.WaitAsync(c.RequestAborted);
                c.Abort();
            },
            HttpProtocols.Http1);

        var metadata = UploadSetup.Metadata(breaker: timeout == "request", timeout: timeout == "request");

        HttpContext? current = null;
        await using var gateway = await StartGatewayAsync(backend, metadata, time, HttpVersion.Version11, timeout == "activity" ? TimeSpan.FromSeconds(3) : null, c => Volatile.Write(ref current, c));
        var state = UploadSetup.Destination(gateway);
        using var client = UploadSetup.Client(gateway);
        (await SendAsync(client, new StringContent("warm")).WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.OK);

        var content = new ChunkedContent();
        var call = SendAsync(client, content, "X-Stall");
        await content.WriteAsync(new byte[100]);
        await arrivals.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        Waits.Until(
            () => Volatile.Read(ref current)?.Request.Body is ClientBodyStream { BytesRead: 100, WaitingOnClient: true, Connection: not null },
            "the gateway read the first part and waits for the client's next bytes");
        var body = (ClientBodyStream)Volatile.Read(ref current)!.Request.Body;
        act.TrySetResult();

        // The gateway has seen the destination's answer or its end of the connection before the timeout passes.
        Waits.Until(() => body.DestinationAnswer > 0 || body.DestinationHasClosed, "the gateway saw the destination's answer or close");
        if (timeout == "request")
        {
            await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(3), call);
        }

        var status = await call.WaitAsync(Waits.Bound, Ct);
        status.Should().NotBe(HttpStatusCode.OK);
        if (destination == "close")
        {
            Waits.Until(() => state.Health.Passive == DestinationHealth.Unhealthy, "the destination that closed its connection unanswered is ejected");
        }
        else
        {
            await ShouldNotBeBlamedAsync(state, client, "the destination answered (413) before the upload ended");
        }
    }

    /// <summary>
    /// A slow upload (chunks keep coming) that the destination gives up on: it answers 408 and closes its connection. Over
    /// HTTP/1.1 the gateway learns it only when its next write of the body fails; the destination answered, so it is not counted.
    /// Over HTTP/2 the answer comes as it is sent, and is judged by its status. <paramref name="policy"/>: "outlier" (outlier
    /// detection alone) or "breaker" (with a circuit breaker, so the resilience handler judges the attempt).
    /// </summary>
    [Theory]
    [InlineData("h2", "outlier")]
    [InlineData("h2", "breaker")]
    [InlineData("h1", "outlier")]
    [InlineData("h1", "breaker")]
    public async Task DestinationGivingUpOnASlowUpload_WithAnAnswer_IsNotCounted(string outgoing, string policy)
    {
        const int Chunk = 64 * 1024;
        var gaveUp = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await UploadSetup.StartDestinationAsync(
            "X-Slow",
            async c =>
            {
                // Reads the first bytes, then decides the body comes too slowly: answers 408 and closes (as Kestrel's own minimum
                // data rate does: over HTTP/1.1 with Connection: close).
                var buffer = new byte[Chunk];
                (await c.Request.Body.ReadAsync(buffer, c.RequestAborted)).Should().BePositive();
                c.Response.StatusCode = StatusCodes.Status408RequestTimeout;
                if (outgoing == "h1")
                {
                    c.Response.Headers.Connection = "close";
                }

                gaveUp.TrySetResult();
            },
            outgoing == "h2" ? HttpProtocols.Http2 : HttpProtocols.Http1);

        var metadata = UploadSetup.Metadata(breaker: policy == "breaker");

        HttpContext? current = null;
        await using var gateway = await StartGatewayAsync(
            backend, metadata, new FakeTimeProvider(), UploadSetup.Outgoing(outgoing), null, c => Volatile.Write(ref current, c));
        var state = UploadSetup.Destination(gateway);
        using var client = UploadSetup.Client(gateway);
        (await SendAsync(client, new StringContent("warm")).WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.OK);

        var content = new ChunkedContent();
        var call = SendAsync(client, content, "X-Slow");
        await content.WriteAsync(new byte[Chunk]);
        await gaveUp.Task.WaitAsync(Waits.Bound, Ct);
        if (outgoing == "h1")
        {
            // The answer reached the gateway's connection (where .NET's client reads it only after the whole body). (Over HTTP/2
            // it reaches the client: the request may be over already.)
            Waits.Until(() => BodyOf(Volatile.Read(ref current)) is { DestinationAnswer: 408 }, "the gateway saw the destination's answer");
        }

        // The client goes on sending, a chunk at a time, each once the gateway has read the one before, until the request ends.
        await KeepUploadingAsync(content, call, () => Volatile.Read(ref current), sent: Chunk, chunk: Chunk, chunks: 64);

        content.Complete();
        var status = await call.WaitAsync(Waits.Bound, Ct);
        status.Should().NotBe(HttpStatusCode.OK);
        await ShouldNotBeBlamedAsync(state, client, "the destination answered 408: the body came too slowly for it");
    }

    /// <summary>
    /// A slow upload (chunks keep coming, the clock moving a little between them) to an HTTP/1.1 destination that stopped
    /// reading: once its transport stops taking bytes the gateway is blocked writing to it, and the timeout that then passes is
    /// the destination's (one failure ejects), not a body still arriving.
    /// </summary>
    [Fact]
    public async Task DestinationThatStopsReadingASlowUpload_IsCounted()
    {
        const int Chunk = 256 * 1024;
        var time = new FakeTimeProvider();
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await UploadSetup.StartDestinationAsync(
            "X-Slow",
            async c =>
            {
                // Takes the request and never reads its body.
                arrived.TrySetResult();
                await Task.Delay(Timeout.Infinite, c.RequestAborted).ContinueWith(_ => { }, TaskScheduler.Default);
            },
            HttpProtocols.Http1,
            configure: b => b.WebHost.ConfigureKestrel(o => o.Limits.MaxRequestBufferSize = 64 * 1024));

        var metadata = UploadSetup.Metadata(timeout: true);
        HttpContext? current = null;
        await using var gateway = await StartGatewayAsync(backend, metadata, time, HttpVersion.Version11, null, c => Volatile.Write(ref current, c));
        var state = UploadSetup.Destination(gateway);
        using var client = UploadSetup.Client(gateway);
        (await SendAsync(client, new StringContent("warm")).WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.OK);

        var content = new ChunkedContent();
        var call = SendAsync(client, content, "X-Slow");
        await content.WriteAsync(new byte[Chunk]);
        await arrived.Task.WaitAsync(Waits.Bound, Ct);

        // A chunk at a time, each once the gateway has passed on the one before, 10 ms of the 3 s timeout apart, until the
        // gateway's write to the destination does not complete: the destination's buffers are full.
        long sent = Chunk;
        DestinationConnection? connection = null;
        for (var i = 0; i < 200; i++)
        {
            Waits.Until(
                () => Volatile.Read(ref current)?.Request.Body is ClientBodyStream { Connection: { } c } body
                    && ((body.WaitingOnClient && body.BytesRead == sent) || c.WritePending),
                "the gateway passed the last chunk on, or is blocked writing it");
            connection = ((ClientBodyStream)Volatile.Read(ref current)!.Request.Body).Connection!;
            if (connection.WritePending)
            {
                break;
            }

            time.Advance(TimeSpan.FromMilliseconds(10));
            _ = content.WriteAsync(new byte[Chunk]);
            sent += Chunk;
        }

        connection!.WritePending.Should().BeTrue("the destination's transport stopped taking the body");
        await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(3), call);
        (await call.WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.GatewayTimeout);
        Waits.Until(() => state.Health.Passive == DestinationHealth.Unhealthy, "the destination that stopped reading is ejected");
    }

    /// <summary>
    /// A slow upload whose bytes still trickle in (a chunk at a time, the clock moving a second between them) when the request's
    /// timeout (<c>Patterns.Timeout</c>, with a breaker and outlier detection) ends it: the gateway was waiting on the client, the
    /// destination reading all it was given, so the timeout is not counted (one failure would eject, and a success and a failure
    /// would open the circuit). <paramref name="outgoing"/>: "h1" or "h2" (h2c) to the destination.
    /// </summary>
    [Theory]
    [InlineData("h1")]
    [InlineData("h2")]
    public async Task ClientTricklingAnUpload_UntilTheTimeout_IsNotCounted(string outgoing)
    {
        const int Chunk = 1024;
        var time = new FakeTimeProvider();
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await KestrelHost.StartAsync(
            _ => { },
            app => app.Run(async c =>
            {
                if (c.Request.Headers.ContainsKey("X-Slow"))
                {
                    arrived.TrySetResult();
                }

                // Reads the whole body, as long as it comes.
                var buffer = new byte[4096];
                while (await c.Request.Body.ReadAsync(buffer, c.RequestAborted) > 0)
                {
                }

                await c.Response.WriteAsync("ok", c.RequestAborted);
            }),
            outgoing == "h2" ? HttpProtocols.Http2 : HttpProtocols.Http1);

        var metadata = UploadSetup.Metadata(breaker: true, timeout: true);
        HttpContext? current = null;
        await using var gateway = await StartGatewayAsync(
            backend, metadata, time, UploadSetup.Outgoing(outgoing), null, c => Volatile.Write(ref current, c));
        var state = UploadSetup.Destination(gateway);
        using var client = UploadSetup.Client(gateway);
        (await SendAsync(client, new StringContent("warm")).WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.OK);

        var content = new ChunkedContent();
        var call = SendAsync(client, content, "X-Slow");
        await content.WriteAsync(new byte[Chunk]);
        await arrived.Task.WaitAsync(Waits.Bound, Ct);

        // A chunk a second, each once the gateway has read the one before, until the request's timeout ends the request: it
        // passes while the gateway waits for the next chunk.
        var sent = await KeepUploadingAsync(content, call, () => Volatile.Read(ref current), sent: Chunk, chunk: Chunk, chunks: 10, beforeEach: () => time.Advance(TimeSpan.FromSeconds(1)));

        var status = await call.WaitAsync(Waits.Bound, Ct);
        content.Complete();
        status.Should().Be(HttpStatusCode.GatewayTimeout);
        sent.Should().BeGreaterThan(Chunk, "the upload went on for a while before the timeout");
        await ShouldNotBeBlamedAsync(state, client, "the body was still arriving when the timeout passed");
    }

    /// <summary>
    /// The destination answers 503 after the first bytes of an upload, before the body is through. Its answer is a failure of
    /// its own, whatever then ends the upload: over HTTP/1.1, where the gateway learns of the answer before .NET's client
    /// hands it over, the upload is stalled and the destination waits (the gateway's timeout ends it: <c>Patterns.Timeout</c>
    /// with a breaker, YARP's activity timeout with outlier detection alone); over HTTP/2 the answer comes as it is sent, the
    /// destination then resets the stream, and the client's upload goes on until the request ends. One failure ejects. <paramref name="outgoing"/>: "h1" or "h2" (h2c) to the destination.
    /// <paramref name="policy"/>: "breaker" or "outlier".
    /// </summary>
    [Theory]
    [InlineData("h1", "breaker")]
    [InlineData("h1", "outlier")]
    [InlineData("h2", "breaker")]
    [InlineData("h2", "outlier")]
    public async Task DestinationAnsweringA5xxMidUpload_IsCounted(string outgoing, string policy)
    {
        var time = new FakeTimeProvider();
        var answered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await UploadSetup.StartDestinationAsync(
            "X-Slow",
            async c =>
            {
                // Reads the first bytes, then answers 503 at once, the rest of the body unread: over HTTP/1.1 it then waits, over
                // HTTP/2 it ends the exchange (Kestrel resets the stream whose body is still coming).
                var buffer = new byte[4096];
                (await c.Request.Body.ReadAsync(buffer, c.RequestAborted)).Should().BePositive();
                c.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
                await c.Response.CompleteAsync();
                answered.TrySetResult();
                if (outgoing == "h2")
                {
                    return;
                }

                await Task.Delay(Timeout.Infinite, c.RequestAborted).ContinueWith(_ => { }, TaskScheduler.Default);
            },
            outgoing == "h2" ? HttpProtocols.Http2 : HttpProtocols.Http1);

        var metadata = UploadSetup.Metadata(breaker: policy == "breaker", timeout: policy == "breaker");

        HttpContext? current = null;
        await using var gateway = await StartGatewayAsync(
            backend, metadata, time, UploadSetup.Outgoing(outgoing),
            outgoing == "h1" && policy == "outlier" ? TimeSpan.FromSeconds(3) : null, c => Volatile.Write(ref current, c));
        var state = UploadSetup.Destination(gateway);
        using var client = UploadSetup.Client(gateway);
        (await SendAsync(client, new StringContent("warm")).WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.OK);

        var content = new ChunkedContent();
        var call = SendAsync(client, content, "X-Slow");

        // A first chunk large enough that the gateway passes it on at once (its writes to the destination are buffered).
        await content.WriteAsync(new byte[64 * 1024]);
        await answered.Task.WaitAsync(Waits.Bound, Ct);
        if (outgoing == "h1")
        {
            // The answer reached the gateway's connection, while the upload is stalled; then the gateway's timeout ends it.
            Waits.Until(() => BodyOf(Volatile.Read(ref current)) is { DestinationAnswer: 503 }, "the gateway saw the destination's answer");
            if (policy == "breaker")
            {
                await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(3), call);
            }
        }
        else
        {
            // The answer comes as it is sent; the client goes on sending, a chunk at a time, each once the gateway has read the
            // one before, until the request ends.
            await KeepUploadingAsync(content, call, () => Volatile.Read(ref current), sent: 64 * 1024, chunk: 64 * 1024, chunks: 64);
        }

        var status = await call.WaitAsync(Waits.Bound, Ct);
        content.Complete();
        status.Should().NotBe(HttpStatusCode.OK);
        Waits.Until(() => state.Health.Passive == DestinationHealth.Unhealthy, "the destination that answered 503 mid-upload is ejected");
    }

    /// <summary>
    /// A slow upload to an HTTP/2 (h2c) destination that stopped reading, its windows at HTTP/2's smallest (65,535 bytes): once
    /// the gateway has read more of the client's body than the windows let through, its copy is blocked writing to the
    /// destination for good (its flow control pushes back), and the request's timeout (<c>Patterns.Timeout</c>) that then passes is the destination's (one
    /// failure ejects), not a body still arriving.
    /// </summary>
    [Fact]
    public async Task Http2DestinationThatStopsReadingASlowUpload_IsCounted()
    {
        const int Chunk = 16 * 1024;
        const int Window = 65_535;

        var time = new FakeTimeProvider();
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await UploadSetup.StartDestinationAsync(
            "X-Slow",
            async c =>
            {
                // Takes the request and never reads its body.
                arrived.TrySetResult();
                await Task.Delay(Timeout.Infinite, c.RequestAborted).ContinueWith(_ => { }, TaskScheduler.Default);
            },
            HttpProtocols.Http2,
            configure: b => b.WebHost.ConfigureKestrel(o =>
            {
                o.Limits.Http2.InitialStreamWindowSize = Window;
                o.Limits.Http2.InitialConnectionWindowSize = Window;
            }));

        var metadata = UploadSetup.Metadata(timeout: true);
        HttpContext? current = null;
        await using var gateway = await StartGatewayAsync(backend, metadata, time, HttpVersion.Version20, null, c => Volatile.Write(ref current, c));
        var state = UploadSetup.Destination(gateway);
        using var client = UploadSetup.Client(gateway);
        (await SendAsync(client, new StringContent("warm")).WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.OK);

        var content = new ChunkedContent();
        var call = SendAsync(client, content, "X-Slow");
        await content.WriteAsync(new byte[Chunk]);
        await arrived.Task.WaitAsync(Waits.Bound, Ct);

        // A chunk at a time, each once the gateway has read the one before, 10 ms of the 3 s timeout apart, until the gateway
        // has read more than the destination's windows let through (the destination never reads, so it never opens them again):
        // every read is followed by its write, which .NET's client completes only within the windows, so the copy cannot come
        // back to reading the client's body; it waits on the destination's flow control.
        long sent = Chunk;
        for (var i = 0; i < 4 * Window / Chunk; i++)
        {
            Waits.Until(
                () => BodyOf(Volatile.Read(ref current)) is { } body
                    && ((body.WaitingOnClient && body.BytesRead == sent) || (!body.WaitingOnClient && body.BytesRead > Window)),
                "the gateway read the last chunk, or is blocked writing to the destination");
            if (BodyOf(Volatile.Read(ref current))!.BytesRead > Window)
            {
                break;
            }

            time.Advance(TimeSpan.FromMilliseconds(10));
            _ = content.WriteAsync(new byte[Chunk]);
            sent += Chunk;
        }

        BodyOf(Volatile.Read(ref current))!.BytesRead.Should().BeGreaterThan(Window, "the destination's flow control stopped taking the body");
        await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(3), call);
        (await call.WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.GatewayTimeout);
        content.Complete();
        Waits.Until(() => state.Health.Passive == DestinationHealth.Unhealthy, "the destination that stopped reading is ejected");
    }

    /// <summary>
    /// Goes on with an upload of which <paramref name="sent"/> bytes have gone: <paramref name="chunk"/> bytes at a time, each
    /// once the gateway has read all before it and waits for more, at most <paramref name="chunks"/> more, until the request
    /// ends. <paramref name="beforeEach"/> runs before each chunk (the clock moving, say). Returns how many bytes went in all.
    /// </summary>
    private static async Task<long> KeepUploadingAsync(
        ChunkedContent content, Task call, Func<HttpContext?> current, long sent, int chunk, int chunks, Action? beforeEach = null)
    {
        for (var i = 0; i < chunks && !call.IsCompleted; i++)
        {
            var expected = sent;
            Waits.Until(
                () => call.IsCompleted || (BodyOf(current()) is { WaitingOnClient: true } upload && upload.BytesRead == expected),
                "the gateway read the last chunk and waits for the next, or the request ended");
            if (call.IsCompleted)
            {
                break;
            }

            if (beforeEach is not null)
            {
                beforeEach();
                if (call.IsCompleted)
                {
                    break;
                }
            }

            await content.WriteAsync(new byte[chunk]);
            sent += chunk;
        }

        return sent;
    }

    /// <summary>The destination was not blamed: it is not ejected (<paramref name="because"/>), and a whole upload goes through (no circuit opened).</summary>
    private static async Task ShouldNotBeBlamedAsync(DestinationState state, HttpClient client, string because)
    {
        state.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, because);
        (await SendAsync(client, new StringContent("whole")).WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.OK, "no circuit opened");
    }

    /// <summary>The request's body as the gateway reads it, or <see langword="null"/> (not yet wrapped, or the request is over).</summary>
    private static ClientBodyStream? BodyOf(HttpContext? context)
    {
        try
        {
            return context?.Request.Body as ClientBodyStream;
        }
        catch (ObjectDisposedException)
        {
            return null;
        }
    }

    /// <summary>A gateway (<see cref="UploadSetup.StartGatewayAsync"/>) that hands the test's uploads (X-Stall or X-Slow) to <paramref name="seen"/>.</summary>
    private static Task<KestrelHost> StartGatewayAsync(
        KestrelHost backend, Dictionary<string, string> metadata, FakeTimeProvider time, Version outgoing, TimeSpan? activityTimeout, Action<HttpContext> seen) =>
        UploadSetup.StartGatewayAsync(backend, metadata, time, outgoing, activityTimeout, context =>
        {
            if (context.Request.Headers.ContainsKey("X-Stall") || context.Request.Headers.ContainsKey("X-Slow"))
            {
                seen(context);
            }
        });

    private static async Task<HttpStatusCode> SendAsync(HttpClient client, HttpContent content, string? header = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/x")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
        if (header is not null)
        {
            request.Headers.Add(header, "1");
        }

        using var response = await client.SendAsync(request, Ct);
        await response.Content.ReadAsStringAsync(Ct);
        return response.StatusCode;
    }

    /// <summary>A request body the test writes chunk by chunk (each flushed), until it completes it or the request ends.</summary>
    private sealed class ChunkedContent : HttpContent
    {
        private readonly Channel<byte[]> _chunks = Channel.CreateUnbounded<byte[]>();
        private readonly Channel<bool> _written = Channel.CreateUnbounded<bool>();

        /// <summary>Sends <paramref name="chunk"/> and waits until it is flushed (or the request ended).</summary>
        public async Task WriteAsync(byte[] chunk)
        {
            _chunks.Writer.TryWrite(chunk);
            if (await _written.Reader.WaitToReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct))
            {
                _written.Reader.TryRead(out _);
            }
        }

        public void Complete() => _chunks.Writer.TryComplete();

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            try
            {
                await foreach (var chunk in _chunks.Reader.ReadAllAsync(cancellationToken))
                {
                    await stream.WriteAsync(chunk, cancellationToken);
                    await stream.FlushAsync(cancellationToken);
                    _written.Writer.TryWrite(true);
                }
            }
            finally
            {
                // A write that failed (the request ended) releases the test's wait too.
                _written.Writer.TryComplete();
            }
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
