using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Yarp.ReverseProxy.Configuration;

namespace Patterns.Gateway.Tests;

/// <summary>Builds gateways for tests, from configuration or from code.</summary>
internal static class Gateways
{
    public static Task<KestrelHost> FromConfigAsync(IConfiguration configuration, TimeProvider? time = null, Action<WebApplicationBuilder>? services = null, Action<WebApplication>? app = null) =>
        KestrelHost.StartAsync(
            b =>
            {
                if (time is not null)
                {
                    b.Services.AddSingleton(time);
                }

                b.AddGateway(g => g.LoadFromConfig(configuration));
                services?.Invoke(b);
            },
            a =>
            {
                app?.Invoke(a);
                a.MapGateway();
            });

    public static Task<KestrelHost> FromCodeAsync(
        IReadOnlyList<RouteConfig> routes, IReadOnlyList<ClusterConfig> clusters, TimeProvider? time = null, Action<WebApplicationBuilder>? services = null, Action<WebApplication>? app = null,
        Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols? protocols = null) =>
        KestrelHost.StartAsync(
            b =>
            {
                if (time is not null)
                {
                    b.Services.AddSingleton(time);
                }

                b.AddGateway(g => g.LoadFromMemory(routes, clusters));
                services?.Invoke(b);
            },
            a =>
            {
                app?.Invoke(a);
                a.MapGateway();
            },
            protocols);

    /// <summary>One catch-all route to one cluster of the given backends.</summary>
    public static (RouteConfig[] Routes, ClusterConfig[] Clusters) OneCluster(
        IDictionary<string, string>? metadata, string? loadBalancing, params (Backend Backend, int? Weight)[] destinations)
    {
        var route = new RouteConfig { RouteId = "all", ClusterId = "c", Match = new RouteMatch { Path = "{**rest}" } };
        var cluster = new ClusterConfig
        {
            ClusterId = "c",
            LoadBalancingPolicy = loadBalancing,
            Metadata = metadata?.AsReadOnly(),
            HealthCheck = metadata is not null && metadata.Keys.Any(k => k.StartsWith("Patterns.Outlier", StringComparison.Ordinal))
                ? new HealthCheckConfig { Passive = new PassiveHealthCheckConfig { Enabled = true, Policy = GatewayPolicies.OutlierDetection } }
                : null,
            Destinations = destinations.ToDictionary(
                d => d.Backend.Name,
                d => new DestinationConfig
                {
                    Address = d.Backend.Address,
                    Metadata = d.Weight is { } w ? new Dictionary<string, string> { [GatewayMetadata.Weight] = w.ToString(System.Globalization.CultureInfo.InvariantCulture) } : null,
                }),
        };
        return ([route], [cluster]);
    }

    /// <summary>Starts a host that must fail: the message of the <see cref="InvalidOperationException"/> that stopped it.</summary>
    public static async Task<string> StartFailureAsync(Func<Task<KestrelHost>> start)
    {
        var failed = await start.Should().ThrowAsync<InvalidOperationException>();
        return failed.Which.Message;
    }

    /// <summary>
    /// Sends requests until <paramref name="done"/> holds for an answer (a configuration reload applies asynchronously),
    /// failing after <see cref="Waits.Bound"/>. Bounded by time, not by a number of requests: 500 quick requests can all go
    /// out before YARP, slowed by a loaded machine, has applied the reload on its own thread.
    /// </summary>
    public static async Task<string> EventuallyAsync(HttpClient client, string path, Func<string, bool> done)
    {
        var last = string.Empty;
        var deadline = System.Diagnostics.Stopwatch.StartNew();
        for (var attempts = 1; ; attempts++)
        {
            using var response = await client.GetAsync(path, TestContext.Current.CancellationToken);
            last = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
            if (done(last))
            {
                return last;
            }

            if (deadline.Elapsed > Waits.Bound)
            {
                throw new Xunit.Sdk.XunitException($"The condition did not hold within {Waits.Bound} ({attempts} requests); last answer: '{last}'.");
            }

            await Task.Yield();
        }
    }
}
