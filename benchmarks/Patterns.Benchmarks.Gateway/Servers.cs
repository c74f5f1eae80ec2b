using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Gateway;
using Patterns.PubSub;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;

namespace Patterns.Benchmarks.Gateway;

public sealed record Quote(string Symbol, decimal Price);

public sealed record GetQuote(string Symbol);

public sealed record Tick(long Sent, int Seq);

/// <summary>The server processes a benchmark starts: each is this program in another mode, so its CPU time is its own.</summary>
internal static class Servers
{
    private static readonly byte[] Kilobyte = Enumerable.Repeat((byte)'x', 1024).ToArray();

    private static WebApplication Build(int port, Action<WebApplicationBuilder>? services = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(o =>
        {
            o.Listen(System.Net.IPAddress.Loopback, port);
            o.Limits.MaxConcurrentConnections = null;
        });
        services?.Invoke(builder);
        return builder.Build();
    }

    /// <summary>The backend: 1 KB for every request; with a failure rate, that share of requests answers 503. /stats counts requests.</summary>
    public static async Task BackendAsync(int port, double failRate) => await BuildBackend(port, failRate).RunAsync();

    /// <summary>The backend of <see cref="BackendAsync"/>, built but not started.</summary>
    public static WebApplication BuildBackend(int port, double failRate)
    {
        long hits = 0;
        var app = Build(port);
        app.Run(context =>
        {
            // Answered here rather than by a mapped endpoint: terminal middleware runs before endpoints would.
            if (context.Request.Path == "/stats")
            {
                return context.Response.WriteAsync(Interlocked.Read(ref hits).ToString(System.Globalization.CultureInfo.InvariantCulture));
            }

            var n = Interlocked.Increment(ref hits);
            if (failRate > 0 && (n * 7919 % 1000) < failRate * 1000)
            {
                context.Response.StatusCode = 503;
                return Task.CompletedTask;
            }

            context.Response.ContentType = "application/octet-stream";
            context.Response.ContentLength = Kilobyte.Length;
            return context.Response.Body.WriteAsync(Kilobyte).AsTask();
        });
        return app;
    }

    /// <summary>A gateway in front of the given destinations: plain YARP as its docs set it up, or Patterns with weights, outlier detection and retries.</summary>
    public static async Task GatewayAsync(int port, string mode, string[] destinations, bool masking)
    {
        var app = BuildGateway(port, mode, destinations, masking, Environment.GetEnvironmentVariable("PATTERNS_BENCH_VARIANT") ?? "all");
        Stats(app);
        await app.RunAsync();
    }

    /// <summary>The gateway of <see cref="GatewayAsync"/>, built but not started; <paramref name="variant"/> strips Patterns features (bare, weighted, outlier; all keeps them).</summary>
    public static WebApplication BuildGateway(int port, string mode, string[] destinations, bool masking, string variant)
    {
        var route = new RouteConfig { RouteId = "all", ClusterId = "c", Match = new RouteMatch { Path = "{**rest}" } };
        var http = new ForwarderRequestConfig { Version = new Version(1, 1), VersionPolicy = HttpVersionPolicy.RequestVersionExact };
        var cluster = new ClusterConfig
        {
            ClusterId = "c",
            HttpRequest = http,
            Destinations = destinations.Select((d, i) => (d, i)).ToDictionary(
                x => "d" + x.i,
                x => new DestinationConfig
                {
                    Address = x.d,
                    Metadata = mode == "patterns" ? new Dictionary<string, string> { [GatewayMetadata.Weight] = x.i == 0 ? "90" : "10" } : null,
                }),
        };
        if (mode == "patterns")
        {
            // PATTERNS_BENCH_VARIANT strips features for a profile's A/B (bare, weighted, outlier); unset, everything is on.
            var metadata = new Dictionary<string, string>();
            if (variant is "all")
            {
                metadata[GatewayMetadata.RetryMaxRetries] = "2";
                metadata[GatewayMetadata.RetryBudgetPercent] = "20";
            }

            if (variant is "all" or "outlier")
            {
                metadata[GatewayMetadata.OutlierConsecutiveFailures] = "5";
            }

            if (masking)
            {
                metadata[GatewayMetadata.OutlierFailureRate] = "0.2";
                metadata[GatewayMetadata.OutlierMinimumRequests] = "50";
                metadata[GatewayMetadata.OutlierInterval] = "00:00:05";
                metadata[GatewayMetadata.OutlierBaseEjectionTime] = "00:00:30";
                metadata[GatewayMetadata.OutlierMaxEjectionPercent] = "34";
                cluster = cluster with { Destinations = cluster.Destinations!.ToDictionary(d => d.Key, d => d.Value with { Metadata = null }) };
            }

            cluster = cluster with
            {
                LoadBalancingPolicy = variant is "bare" ? null : GatewayPolicies.Weighted,
                Metadata = metadata,
                HealthCheck = new HealthCheckConfig
                {
                    Passive = new PassiveHealthCheckConfig { Enabled = true, Policy = variant is "bare" or "weighted" ? null : GatewayPolicies.OutlierDetection },
                },
            };
            if (variant is "bare")
            {
                cluster = cluster with { Destinations = cluster.Destinations!.ToDictionary(d => d.Key, d => d.Value with { Metadata = null }) };
            }

            var app = Build(port, b => b.AddGateway(g => g.LoadFromMemory([route], [cluster])));
            app.MapGateway();
            return app;
        }
        else
        {
            // Plain YARP 2.3.0 as its documentation sets it up, passive health checks on (transport failures only).
            cluster = cluster with { HealthCheck = new HealthCheckConfig { Passive = new PassiveHealthCheckConfig { Enabled = true } } };
            var app = Build(port, b => b.Services.AddReverseProxy().LoadFromMemory([route], [cluster]));
            app.MapReverseProxy();
            return app;
        }
    }

    /// <summary>
    /// GET /__stats: bytes allocated and gen-0 collections so far, for allocations per request in a profile's A/B. With
    /// PATTERNS_BENCH_ALLOCATIONS=1, GET /__allocations lists the runtime's sampled allocations by type (one sample per ~100 KB),
    /// bytes then type, most first.
    /// </summary>
    private static void Stats(WebApplication app)
    {
        var sampler = Environment.GetEnvironmentVariable("PATTERNS_BENCH_ALLOCATIONS") == "1" ? new Patterns.Benchmarks.Orchestration.AllocListener() : null;
        app.Use((context, next) => context.Request.Path.Value switch
        {
            "/__stats" => context.Response.WriteAsync($"{GC.GetTotalAllocatedBytes()} {GC.CollectionCount(0)}"),
            "/__allocations" when sampler is not null => context.Response.WriteAsync(
                string.Concat(sampler.Bytes.OrderByDescending(p => p.Value).Select(p => $"{p.Value} {p.Key}\n"))),
            _ => next(context),
        });
    }

    /// <summary>An in-process request handler reached two ways: through the gateway's MapRequest, and through a minimal-API endpoint calling the same code.</summary>
    public static async Task RequestResponseAsync(int port)
    {
        var app = Build(port, b =>
        {
            b.AddPatterns(p => p.UseInMemory());
            b.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, _) => ValueTask.FromResult(Price(q))));
            b.AddGateway();
        });
        app.MapRequest<GetQuote, Quote>("/gateway/quote");
        app.MapPost("/minimal/quote", (GetQuote q) => Price(q));
        await app.RunAsync();
    }

    private static Quote Price(GetQuote q) => new(q.Symbol, 101.25m);

    /// <summary>SSE on one topic; publishes <paramref name="rate"/> ticks per second for <paramref name="seconds"/> once POST /start arrives.</summary>
    public static async Task PushServerAsync(int port, int rate, int seconds)
    {
        var app = Build(port, b =>
        {
            b.AddPatterns(p => p.UseInMemory());
            b.AddPubSub();
            b.AddGateway(g => g.ConfigurePush(o => o.MaxConnections = 100_000));
        });
        app.MapServerSentEvents("/sse", "ticks", o => o.BufferCapacity = 1024);
        app.MapPost("/start", (IPublisher publisher) =>
        {
            _ = Task.Run(async () =>
            {
                var started = Stopwatch.GetTimestamp();
                for (var i = 0; i < rate * seconds; i++)
                {
                    var due = started + (long)(i * (double)Stopwatch.Frequency / rate);
                    while (Stopwatch.GetTimestamp() < due)
                    {
                        await Task.Delay(1);
                    }

                    await publisher.PublishAsync("ticks", new Tick(Stopwatch.GetTimestamp(), i));
                }
            });
            return Results.Accepted();
        });
        await app.RunAsync();
    }
}
