using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Patterns.Gateway.Resilience;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;
using Yarp.ReverseProxy.Transforms;

namespace Patterns.Gateway.Tests;

/// <summary>
/// A destination's early answer over HTTP/1.1 (a 413 sent before the request body has fully gone to it, while the client's
/// upload is stalled) is seen by the gateway and judged by its status whatever the route and the connection: with a request
/// transform that completes asynchronously (YARP then sends on another thread than the one that ran the transforms), and
/// over TLS (the answer is readable only once decrypted).
/// </summary>
public sealed class EarlyAnswerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>
    /// <paramref name="transform"/>: "sync" (no transform of the route's own) or "async" (a request transform that yields).
    /// <paramref name="tls"/>: the destination speaks HTTPS (a self-signed certificate the cluster accepts).
    /// </summary>
    [Theory]
    [InlineData("async", false)]
    [InlineData("sync", true)]
    [InlineData("async", true)]
    public async Task DestinationAnsweringEarly_DuringAStalledUpload_IsSeenAndNotCounted(string transform, bool tls)
    {
        var time = new FakeTimeProvider();
        var answered = Channel.CreateUnbounded<bool>();
        await using var backend = await StartBackendAsync(tls, async c =>
        {
            if (!c.Request.Headers.ContainsKey("X-Stall"))
            {
                await c.Response.WriteAsync("ok", c.RequestAborted);
                return;
            }

            // Answers at once, the body unread, and keeps the connection open.
            c.Response.StatusCode = StatusCodes.Status413PayloadTooLarge;
            await c.Response.CompleteAsync();
            answered.Writer.TryWrite(true);
            await Task.Delay(Timeout.Infinite, c.RequestAborted).ContinueWith(_ => { }, TaskScheduler.Default);
        });

        HttpContext? current = null;
        await using var gateway = await StartGatewayAsync(backend.Address, time, transform == "async", c => Volatile.Write(ref current, c));
        var state = OutlierDetectionTests.Cluster(gateway).DestinationsState.AllDestinations.Single();
        using var handler = new SocketsHttpHandler();
        using var client = new HttpClient(handler) { BaseAddress = new Uri(gateway.Address) };
        (await SendAsync(client, new StringContent("warm")).WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.OK);

        var content = new StalledContent();
        var call = SendAsync(client, content, "X-Stall");
        await content.Sent.Task.WaitAsync(Waits.Bound, Ct);
        await answered.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);

        // The gateway saw the 413 arrive on its connection while the upload is stalled.
        Waits.Until(() => BodyOf(Volatile.Read(ref current)) is { DestinationAnswer: 413 }, "the gateway saw the destination's early answer");

        // Then the gateway's timeout ends the request: the destination had answered, so it is not counted against it.
        await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(3), call);
        (await call.WaitAsync(Waits.Bound, Ct)).Should().NotBe(HttpStatusCode.OK);
        content.Release();
        state.Health.Passive.Should().NotBe(DestinationHealth.Unhealthy, "the destination answered (413) before the upload ended");
        (await SendAsync(client, new StringContent("whole")).WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.OK, "no circuit opened");
    }

    /// <summary>
    /// Over TLS, a destination that closes its connection unanswered while the client's upload is stalled is seen closing (by the
    /// connection's read-ahead above the TLS stream), so the timeout that follows is counted against it, not taken for the
    /// client's stall.
    /// </summary>
    [Fact]
    public async Task TlsDestinationClosingDuringAStalledUpload_IsSeenAndCounted()
    {
        var time = new FakeTimeProvider();
        var arrived = Channel.CreateUnbounded<bool>();
        var close = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var backend = await StartBackendAsync(tls: true, async c =>
        {
            if (!c.Request.Headers.ContainsKey("X-Stall"))
            {
                await c.Response.WriteAsync("ok", c.RequestAborted);
                return;
            }

            arrived.Writer.TryWrite(true);
            await close.Task.WaitAsync(c.RequestAborted);
            c.Abort();
        });

        HttpContext? current = null;
        await using var gateway = await StartGatewayAsync(backend.Address, time, asyncTransform: false, c => Volatile.Write(ref current, c));
        var state = OutlierDetectionTests.Cluster(gateway).DestinationsState.AllDestinations.Single();
        using var handler = new SocketsHttpHandler();
        using var client = new HttpClient(handler) { BaseAddress = new Uri(gateway.Address) };
        (await SendAsync(client, new StringContent("warm")).WaitAsync(Waits.Bound, Ct)).Should().Be(HttpStatusCode.OK);

        var content = new StalledContent();
        var call = SendAsync(client, content, "X-Stall");
        await content.Sent.Task.WaitAsync(Waits.Bound, Ct);
        await arrived.Reader.ReadAsync(Ct).AsTask().WaitAsync(Waits.Bound, Ct);
        Waits.Until(
            () => BodyOf(Volatile.Read(ref current)) is { BytesRead: 100, WaitingOnClient: true },
            "the gateway read the first part and waits for the client's next bytes");
        close.TrySetResult();

        Waits.Until(() => BodyOf(Volatile.Read(ref current)) is { DestinationHasClosed: true }, "the gateway saw the destination close");
        await Clock.AdvanceUntilAsync(time, TimeSpan.FromSeconds(3), call);
        (await call.WaitAsync(Waits.Bound, Ct)).Should().NotBe(HttpStatusCode.OK);
        content.Release();
        Waits.Until(() => state.Health.Passive == DestinationHealth.Unhealthy, "the destination that closed its connection unanswered is ejected");
    }

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

    private static Task<KestrelHost> StartGatewayAsync(string backend, FakeTimeProvider time, bool asyncTransform, Action<HttpContext> seen)
    {
        var route = new RouteConfig { RouteId = "all", ClusterId = "c", Match = new RouteMatch { Path = "{**rest}" } };
        var cluster = new ClusterConfig
        {
            ClusterId = "c",
            LoadBalancingPolicy = GatewayPolicies.Weighted,
            Metadata = new Dictionary<string, string>
            {
                [GatewayMetadata.OutlierConsecutiveFailures] = "1",
                [GatewayMetadata.Timeout] = "00:00:03",
                [GatewayMetadata.CircuitBreakerFailureRatio] = "0.5",
                [GatewayMetadata.CircuitBreakerMinimumThroughput] = "2",
                [GatewayMetadata.CircuitBreakerBreakDuration] = "00:01:00",
            },
            HealthCheck = new HealthCheckConfig { Passive = new PassiveHealthCheckConfig { Enabled = true, Policy = GatewayPolicies.OutlierDetection } },
            HttpClient = new HttpClientConfig { DangerousAcceptAnyServerCertificate = true },
            HttpRequest = new ForwarderRequestConfig { Version = HttpVersion.Version11, VersionPolicy = HttpVersionPolicy.RequestVersionExact },
            Destinations = new Dictionary<string, DestinationConfig> { ["b"] = new() { Address = backend } },
        };

        // The client speaks HTTP/2 to the gateway, so the gateway's answer comes while the body is still open.
        return KestrelHost.StartAsync(
            b =>
            {
                b.Services.AddSingleton<TimeProvider>(time);
                b.WebHost.ConfigureKestrel(o => o.Limits.MinRequestBodyDataRate = null);
                b.AddGateway(g =>
                {
                    g.LoadFromMemory([route], [cluster]);
                    if (asyncTransform)
                    {
                        g.AddTransforms(t => t.AddRequestTransform(async _ => await Task.Yield()));
                    }
                });
            },
            a =>
            {
                a.Use((context, next) =>
                {
                    if (context.Request.Headers.ContainsKey("X-Stall"))
                    {
                        seen(context);
                    }

                    return next(context);
                });
                a.MapGateway();
            },
            HttpProtocols.Http2);
    }

    /// <summary>The destination: Kestrel on 127.0.0.1 with an ephemeral port, HTTP/1.1, with TLS (a fresh self-signed certificate) or without.</summary>
    private static async Task<Destination> StartBackendAsync(bool tls, RequestDelegate behavior)
    {
        var certificate = tls ? SelfSigned() : null;
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseKestrel(o => o.Listen(IPAddress.Loopback, 0, l =>
        {
            l.Protocols = HttpProtocols.Http1;
            if (certificate is not null)
            {
                l.UseHttps(certificate);
            }
        }));
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.Run(behavior);
        await app.StartAsync(Ct);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        address.Should().StartWith(tls ? "https://" : "http://");
        return new Destination(app, certificate, address);
    }

    private sealed class Destination(WebApplication app, X509Certificate2? certificate, string address) : IAsyncDisposable
    {
        public string Address => address;

        public async ValueTask DisposeAsync()
        {
            await app.StopAsync(CancellationToken.None);
            await app.DisposeAsync();
            certificate?.Dispose();
        }
    }

    private static X509Certificate2 SelfSigned()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        using var created = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(created.Export(X509ContentType.Pkcs12), null);
    }

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

    /// <summary>A request body that sends 100 bytes, then stalls until released (or the request ends).</summary>
    private sealed class StalledContent : HttpContent
    {
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Sent { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Release() => _release.TrySetResult();

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            await stream.WriteAsync(new byte[100], cancellationToken);
            await stream.FlushAsync(cancellationToken);
            Sent.TrySetResult();
            await _release.Task.WaitAsync(cancellationToken);
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
