using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Time.Testing;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Tests;

/// <summary>
/// A client that goes away while the gateway still streams its request body to the destination: the attempt fails on the
/// client's side, and neither the circuit breaker nor outlier detection may count it against the destination.
/// </summary>
public sealed class ClientUploadAbortTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Dictionary<string, string> Counting() => new()
    {
        [GatewayMetadata.CircuitBreakerFailureRatio] = "0.5",
        [GatewayMetadata.CircuitBreakerMinimumThroughput] = "2",
        [GatewayMetadata.CircuitBreakerBreakDuration] = "00:01:00",
        [GatewayMetadata.OutlierConsecutiveFailures] = "1",
    };

    /// <summary><paramref name="how"/>: the client's protocol and how it goes; "-outlier": outlier detection alone (no resilience), to HTTP/2 (h2c) destinations.</summary>
    [Theory]
    [InlineData("http1-reset")]
    [InlineData("http1-close")]
    [InlineData("http2-cancel")]
    [InlineData("http1-reset-outlier")]
    [InlineData("http2-cancel-outlier")]
    public async Task ClientGoingAwayMidUpload_IsNotCounted(string how)
    {
        // The destination reads the body, which never ends; the client goes away after part of it. Two such requests would be
        // two failures in two attempts for the breaker, and one is enough for outlier detection here.
        var completed = Channel.CreateUnbounded<int>();
        var outlierOnly = how.EndsWith("-outlier", StringComparison.Ordinal);
        await using var backend = await Backend.StartAsync(
            "b", c => c.Response.WriteAsync("answer", c.RequestAborted), outlierOnly ? Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2 : null);
        var metadata = outlierOnly ? new Dictionary<string, string> { [GatewayMetadata.OutlierConsecutiveFailures] = "1" } : Counting();
        var (routes, clusters) = Gateways.OneCluster(metadata, GatewayPolicies.Weighted, (backend, null));
        if (outlierOnly)
        {
            // To the destination over h2c, where a reset of the stream by either side cancels the body's copy.
            clusters = [clusters[0] with { HttpRequest = new Yarp.ReverseProxy.Forwarder.ForwarderRequestConfig { Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact } }];
        }

        await using var gateway = await Gateways.FromCodeAsync(
            routes, clusters, new FakeTimeProvider(),
            app: a => a.Use(async (context, next) =>
            {
                try
                {
                    await next(context);
                }
                finally
                {
                    completed.Writer.TryWrite(context.Response.StatusCode);
                }
            }),
            protocols: how.StartsWith("http2", StringComparison.Ordinal) ? Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2 : null);
        var destination = OutlierDetectionTests.Cluster(gateway).DestinationsState.AllDestinations.Single();

        for (var i = 0; i < 2; i++)
        {
            var before = backend.Hits;
            await AbortMidUploadAsync(gateway, how, () => backend.Hits > before);
            var status = await completed.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
            status.Should().BeOneOf([StatusCodes.Status400BadRequest, StatusCodes.Status499ClientClosedRequest], "the client went away while its body was read");
        }

        using var final = new HttpRequestMessage(HttpMethod.Post, "/x")
        {
            Version = how.StartsWith("http2", StringComparison.Ordinal) ? HttpVersion.Version20 : HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new StringContent("whole"),
        };
        using var response = await gateway.Client.SendAsync(final, Ct).WaitAsync(Waits.Bound, Ct);
        response.StatusCode.Should().Be(HttpStatusCode.OK, "clients that went away mid-upload opened no circuit and ejected nothing");
        destination.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy);
        backend.Hits.Should().Be(3);
    }

    private static async Task AbortMidUploadAsync(KestrelHost gateway, string how, Func<bool> reached)
    {
        var uri = new Uri(gateway.Address);
        if (how.StartsWith("http1", StringComparison.Ordinal))
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(IPAddress.Loopback, uri.Port, Ct);
            var head = Encoding.ASCII.GetBytes($"POST /x HTTP/1.1\r\nHost: {uri.Authority}\r\nContent-Length: 100000\r\n\r\n" + new string('a', 100));
            await socket.SendAsync(head, SocketFlags.None, Ct);
            Waits.Until(reached, "the request reached the destination");
            if (how == "http1-reset")
            {
                socket.LingerState = new LingerOption(true, 0);
            }

            socket.Close();
            return;
        }

        using var handler = new SocketsHttpHandler();
        using var client = new HttpClient(handler) { BaseAddress = uri };
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/x")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new PartialContent(),
        };
        var call = client.SendAsync(request, cancel.Token);
        Waits.Until(() => reached() || call.IsCompleted, "the request reached the destination");
        call.IsCompleted.Should().BeFalse("the gateway speaks HTTP/2 without TLS and the body never ends");
        await cancel.CancelAsync();
        await call.Invoking(c => c).Should().ThrowAsync<OperationCanceledException>();
    }

    /// <summary>A request body that sends a first part and then never ends (until its request is cancelled).</summary>
    private sealed class PartialContent : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            await stream.WriteAsync(new byte[100], cancellationToken);
            await stream.FlushAsync(cancellationToken);
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
