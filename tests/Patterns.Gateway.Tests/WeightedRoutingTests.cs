using System.Security.Claims;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Gateway.LoadBalancing;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Tests;

public sealed class WeightedRoutingTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task PickDestination_90To10Over20000Requests_SplitWithinHalfAPoint()
    {
        await using var v1 = await Backend.StartAsync("v1");
        await using var v2 = await Backend.StartAsync("v2");
        var (routes, clusters) = Gateways.OneCluster(null, GatewayPolicies.Weighted, (v1, 90), (v2, 10));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);
        var (policy, cluster) = Resolve(gateway);

        var counts = Pick(policy, cluster, 20_000, _ => new DefaultHttpContext());

        Share(counts, "v1").Should().BeApproximately(90.0, 0.5);
        counts["v1"].Should().Be(18_000, "smooth weighted round robin is exact over whole cycles");
    }

    [Fact]
    public async Task PickDestination_ConcurrentPicks_SameSequenceAsTheLockedAlgorithmAndExactOverWholeCycles()
    {
        await using var v1 = await Backend.StartAsync("v1");
        await using var v2 = await Backend.StartAsync("v2");
        var (routes, clusters) = Gateways.OneCluster(null, GatewayPolicies.Weighted, (v1, 90), (v2, 10));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);
        var (policy, cluster) = Resolve(gateway);
        var available = cluster.DestinationsState.AvailableDestinations;

        // The scheduled picks (the cluster's own list, nothing excluded) against the locked algorithm on a copy of the list,
        // which takes the locked path: the same order, cycle after cycle.
        var copy = available.ToList();
        var scheduled = Enumerable.Range(0, 40).Select(_ => policy.PickDestination(new DefaultHttpContext(), cluster, available)!.DestinationId).ToList();
        var locked = Enumerable.Range(0, 40).Select(_ => policy.Pick(new DefaultHttpContext(), cluster, copy, exclude: null)!.DestinationId).ToList();
        scheduled.Should().Equal(locked);
        scheduled.Count(d => d == "v2").Should().Be(4);

        // Four threads at once, released together: every pick is one step of the schedule, none lost or repeated.
        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var threads = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            await start.Task;
            var mine = new Dictionary<string, int> { ["v1"] = 0, ["v2"] = 0 };
            for (var i = 0; i < 5_000; i++)
            {
                mine[policy.PickDestination(new DefaultHttpContext(), cluster, available)!.DestinationId]++;
            }

            return mine;
        }, Ct)).ToList();
        start.SetResult();
        var all = await Task.WhenAll(threads);
        all.Sum(c => c["v1"]).Should().Be(18_000, "20,000 picks are whole cycles of 10");
        all.Sum(c => c["v2"]).Should().Be(2_000);
    }

    [Fact]
    public async Task PickDestination_CycleLongerThanTheKeptSchedule_LockedPathExactOverWholeCycles()
    {
        // 4097:1 is a cycle of 4,098 picks, longer than the 4,096 kept as a schedule: every pick takes the locked path.
        await using var v1 = await Backend.StartAsync("v1");
        await using var v2 = await Backend.StartAsync("v2");
        var (routes, clusters) = Gateways.OneCluster(null, GatewayPolicies.Weighted, (v1, 4097), (v2, 1));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);
        var (policy, cluster) = Resolve(gateway);
        var available = cluster.DestinationsState.AvailableDestinations;

        // One whole cycle from the cluster's own list, then one from a copy (the locked path either way): the same order.
        var own = Enumerable.Range(0, 4_098).Select(_ => policy.PickDestination(new DefaultHttpContext(), cluster, available)!.DestinationId).ToList();
        var copy = available.ToList();
        var locked = Enumerable.Range(0, 4_098).Select(_ => policy.Pick(new DefaultHttpContext(), cluster, copy, exclude: null)!.DestinationId).ToList();
        own.Should().Equal(locked);
        own.Count(d => d == "v2").Should().Be(1);

        // Two threads at once, released together: two whole cycles, exact.
        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var threads = Enumerable.Range(0, 2).Select(_ => Task.Run(async () =>
        {
            await start.Task;
            var mine = new Dictionary<string, int> { ["v1"] = 0, ["v2"] = 0 };
            for (var i = 0; i < 4_098; i++)
            {
                mine[policy.PickDestination(new DefaultHttpContext(), cluster, available)!.DestinationId]++;
            }

            return mine;
        }, Ct)).ToList();
        start.SetResult();
        var all = await Task.WhenAll(threads);
        all.Sum(c => c["v1"]).Should().Be(8_194);
        all.Sum(c => c["v2"]).Should().Be(2);
    }

    [Fact]
    public async Task PickDestination_StickyByHeader_SplitWithinHalfAPointAndEachKeyKeepsItsDestination()
    {
        await using var v1 = await Backend.StartAsync("v1");
        await using var v2 = await Backend.StartAsync("v2");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RoutingKey] = "header:X-User" }, GatewayPolicies.Weighted, (v1, 90), (v2, 10));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);
        var (policy, cluster) = Resolve(gateway);

        var first = new Dictionary<int, string>();
        var counts = Pick(policy, cluster, 20_000, i => User(i), (i, d) => first[i] = d);
        var again = Pick(policy, cluster, 20_000, i => User(i), (i, d) => d.Should().Be(first[i], $"user {i} is sticky"));

        Share(counts, "v1").Should().BeApproximately(90.0, 0.5);
        again.Should().BeEquivalentTo(counts);

        // 90/10 → 50/50: a key already on v2 stays on v2 (consistent hashing moves only keys that must move).
        gateway.Services.GetRequiredService<DestinationWeights>().Set("c", new Dictionary<string, int> { ["v1"] = 50, ["v2"] = 50 });
        var moved = 0;
        var half = Pick(policy, cluster, 20_000, i => User(i), (i, d) =>
        {
            if (first[i] == "v2")
            {
                d.Should().Be("v2");
            }

            if (d != first[i])
            {
                moved++;
            }
        });
        Share(half, "v1").Should().BeApproximately(50.0, 1.0);
        moved.Should().Be(half["v2"] - counts["v2"], "only keys moving from v1 to v2 change destination");

        static HttpContext User(int i)
        {
            var context = new DefaultHttpContext();
            context.Request.Headers["X-User"] = $"user-{i}";
            return context;
        }
    }

    [Fact]
    public async Task PickDestination_StickyByCookieAndClaim_SameKeySameDestination()
    {
        await using var v1 = await Backend.StartAsync("v1");
        await using var v2 = await Backend.StartAsync("v2");
        var (cookieRoutes, cookieClusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RoutingKey] = "cookie:session" }, GatewayPolicies.Weighted, (v1, 50), (v2, 50));
        await using var byCookie = await Gateways.FromCodeAsync(cookieRoutes, cookieClusters);
        var (claimRoutes, claimClusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RoutingKey] = "claim:sub" }, GatewayPolicies.Weighted, (v1, 50), (v2, 50));
        await using var byClaim = await Gateways.FromCodeAsync(claimRoutes, claimClusters);

        for (var i = 0; i < 50; i++)
        {
            var cookie = new HashSet<string>();
            for (var r = 0; r < 10; r++)
            {
                cookie.Add(await RoutingTests.Send(byCookie.Client, HttpMethod.Get, "/x", ("Cookie", $"session=s{i}")));
            }

            cookie.Should().ContainSingle($"session s{i} is sticky");
        }

        var (policy, cluster) = Resolve(byClaim);
        var counts = Pick(policy, cluster, 2_000, i => Claim(i % 100));
        counts.Values.Sum().Should().Be(2_000);
        var perKey = Enumerable.Range(0, 100).Select(k => policy.PickDestination(Claim(k), cluster, cluster.DestinationsState.AvailableDestinations)!.DestinationId).ToArray();
        Enumerable.Range(0, 100).Select(k => policy.PickDestination(Claim(k), cluster, cluster.DestinationsState.AvailableDestinations)!.DestinationId)
            .Should().Equal(perKey);
        perKey.Should().Contain("v1").And.Contain("v2");

        static HttpContext Claim(int i) => new DefaultHttpContext { User = new ClaimsPrincipal(new ClaimsIdentity([new Claim("sub", $"subject-{i}")], "test")) };
    }

    [Fact]
    public async Task Gateway_90To10_EndToEndSplitIsExactAndLiveReweightApplies()
    {
        await using var v1 = await Backend.StartAsync("v1");
        await using var v2 = await Backend.StartAsync("v2");
        var (routes, clusters) = Gateways.OneCluster(null, GatewayPolicies.Weighted, (v1, 90), (v2, 10));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);

        await SendMany(gateway.Client, 1_000);
        v1.Hits.Should().Be(900);
        v2.Hits.Should().Be(100);

        gateway.Services.GetRequiredService<DestinationWeights>().Set("c", new Dictionary<string, int> { ["v1"] = 50, ["v2"] = 50 });
        await SendMany(gateway.Client, 1_000);
        (v1.Hits - 900).Should().BeInRange(499, 501);
        (v2.Hits - 100).Should().BeInRange(499, 501);

        // Blue-green: everything to v2.
        gateway.Services.GetRequiredService<DestinationWeights>().Set("c", new Dictionary<string, int> { ["v1"] = 0, ["v2"] = 1 });
        var before = v1.Hits;
        await SendMany(gateway.Client, 100);
        v1.Hits.Should().Be(before);
    }

    [Fact]
    public async Task Gateway_WeightChangedInConfiguration_NewSplitAppliesWithoutRestart()
    {
        await using var v1 = await Backend.StartAsync("v1");
        await using var v2 = await Backend.StartAsync("v2");
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Routes:r:ClusterId"] = "c",
            ["Routes:r:Match:Path"] = "{**rest}",
            ["Clusters:c:LoadBalancingPolicy"] = "Weighted",
            ["Clusters:c:Destinations:v1:Address"] = v1.Address,
            ["Clusters:c:Destinations:v1:Metadata:Weight"] = "95",
            ["Clusters:c:Destinations:v2:Address"] = v2.Address,
            ["Clusters:c:Destinations:v2:Metadata:Weight"] = "5",
        }).Build();
        await using var gateway = await Gateways.FromConfigAsync(config);
        await SendMany(gateway.Client, 100);
        v2.Hits.Should().Be(5);

        config["Clusters:c:Destinations:v1:Metadata:Weight"] = "0";
        config.Reload();
        await Gateways.EventuallyAsync(gateway.Client, "/x", body => body == "v2");
        var before = v1.Hits;
        await SendMany(gateway.Client, 50);

        v1.Hits.Should().Be(before);
    }

    [Fact(Timeout = 300_000)]
    public async Task Gateway_50To30To20_20000RequestsThroughKestrel_SplitWithinHalfAPoint()
    {
        await using var v1 = await Backend.StartAsync("v1");
        await using var v2 = await Backend.StartAsync("v2");
        await using var v3 = await Backend.StartAsync("v3");
        var (routes, clusters) = Gateways.OneCluster(null, GatewayPolicies.Weighted, (v1, 50), (v2, 30), (v3, 20));
        await using var gateway = await Gateways.FromCodeAsync(routes, clusters);

        // 20,000 HTTP requests through the gateway: each answer names its destination. The first goes alone: it computes
        // the cycle of picks, and the 19,999 others, 16 at a time, each take its next step. (Requests that came while the
        // cycle was being computed would take the step-by-step path instead, whose picks are not steps of the cycle: a
        // pick or two more or less per destination, which the share allows but an exact count would not.)
        var answers = new List<string> { await gateway.Client.GetStringAsync("/x", Ct) };
        answers.AddRange(await SendConcurrently(gateway.Client, 19_999, _ => null));

        var counts = answers.GroupBy(a => a).ToDictionary(g => g.Key, g => g.Count());
        Share(counts, "v1").Should().BeApproximately(50.0, 0.5);
        Share(counts, "v2").Should().BeApproximately(30.0, 0.5);
        Share(counts, "v3").Should().BeApproximately(20.0, 0.5);

        // Smooth weighted round robin is deterministic: 20,000 requests are 2,000 whole cycles of 10 (5, 3, 2), whatever
        // order the concurrent requests took their steps in, and each backend saw exactly the requests it answered.
        counts.Should().BeEquivalentTo(new Dictionary<string, int> { ["v1"] = 10_000, ["v2"] = 6_000, ["v3"] = 4_000 });
        (v1.Hits, v2.Hits, v3.Hits).Should().Be((10_000, 6_000, 4_000));
    }

    [Theory(Timeout = 300_000)]
    [InlineData("header:X-User")]
    [InlineData("cookie:session")]
    [InlineData("claim:sub")]
    public async Task Gateway_Sticky_20000RequestsThroughKestrel_EachKeyKeepsItsDestinationAndKeysSplitByWeight(string routingKey)
    {
        await using var v1 = await Backend.StartAsync("v1");
        await using var v2 = await Backend.StartAsync("v2");
        await using var v3 = await Backend.StartAsync("v3");
        var (routes, clusters) = Gateways.OneCluster(
            new Dictionary<string, string> { [GatewayMetadata.RoutingKey] = routingKey }, GatewayPolicies.Weighted, (v1, 50), (v2, 30), (v3, 20));

        // The same 20,000 keys, user-0 to user-19999, whichever way they come: an X-User header, a session cookie, or the
        // sub claim of an API key's client (key-N signs in user-N).
        const int users = 20_000;
        await using var gateway = await Gateways.FromCodeAsync(
            routes,
            clusters,
            services: b => b.Services.AddAuthentication(ApiKeyAuthenticationOptions.DefaultScheme).AddApiKeys(o =>
            {
                for (var i = 0; i < users; i++)
                {
                    o.Keys[$"key-{i}"] = $"user-{i}";
                }
            }),
            app: a => a.UseAuthentication());
        (string Name, string Value) Key(int user) => routingKey.Split(':')[0] switch
        {
            "header" => ("X-User", $"user-{user}"),
            "cookie" => ("Cookie", $"session=user-{user}"),
            _ => ("X-Api-Key", $"key-{user}"),
        };

        // Every user once: the split over users.
        var first = await SendConcurrently(gateway.Client, users, i => Key(i));
        var counts = first.GroupBy(a => a).ToDictionary(g => g.Key, g => g.Count());
        Share(counts, "v1").Should().BeApproximately(50.0, 0.5);
        Share(counts, "v2").Should().BeApproximately(30.0, 0.5);
        Share(counts, "v3").Should().BeApproximately(20.0, 0.5);

        // The key alone decides (a stable hash, whatever carried it): the split is the one the header, the cookie and the
        // claim all give, 10,019 / 5,990 / 3,991.
        counts.Should().BeEquivalentTo(new Dictionary<string, int> { ["v1"] = 10_019, ["v2"] = 5_990, ["v3"] = 3_991 });

        // The same 20,000 users again, in another order and concurrently: every user reaches the destination it reached first.
        var order = Enumerable.Range(0, users).Select(i => (int)((i * 7_919L) % users)).ToArray();
        var again = await SendConcurrently(gateway.Client, users, i => Key(order[i]));
        var moved = Enumerable.Range(0, users).Count(i => again[i] != first[order[i]]);
        moved.Should().Be(0, "a routing key always reaches the same destination while the weights stay put");
        (v1.Hits, v2.Hits, v3.Hits).Should().Be((2 * counts["v1"], 2 * counts["v2"], 2 * counts["v3"]));
    }

    /// <summary>
    /// Sends <paramref name="count"/> GETs through <paramref name="client"/>, 16 in flight at a time, with the header
    /// <paramref name="header"/>(i) when not null; returns the destination that answered each, by index.
    /// </summary>
    private static async Task<string[]> SendConcurrently(HttpClient client, int count, Func<int, (string Name, string Value)?> header)
    {
        var answers = new string[count];
        await Parallel.ForAsync(0, count, new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = Ct }, async (i, ct) =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/x");
            if (header(i) is { } h)
            {
                request.Headers.Add(h.Name, h.Value);
            }

            using var response = await client.SendAsync(request, ct);
            response.EnsureSuccessStatusCode();
            answers[i] = await response.Content.ReadAsStringAsync(ct);
        });
        return answers;
    }

    private static async Task SendMany(HttpClient client, int count)
    {
        for (var i = 0; i < count; i++)
        {
            using var response = await client.GetAsync("/x", Ct);
            response.EnsureSuccessStatusCode();
        }
    }

    private static (WeightedLoadBalancingPolicy Policy, ClusterState Cluster) Resolve(KestrelHost gateway)
    {
        gateway.Services.GetRequiredService<IProxyStateLookup>().TryGetCluster("c", out var cluster).Should().BeTrue();
        return (gateway.Services.GetRequiredService<WeightedLoadBalancingPolicy>(), cluster!);
    }

    private static Dictionary<string, int> Pick(WeightedLoadBalancingPolicy policy, ClusterState cluster, int count, Func<int, HttpContext> context, Action<int, string>? each = null)
    {
        var counts = new Dictionary<string, int> { ["v1"] = 0, ["v2"] = 0 };
        for (var i = 0; i < count; i++)
        {
            var chosen = policy.PickDestination(context(i), cluster, cluster.DestinationsState.AvailableDestinations)!.DestinationId;
            counts[chosen]++;
            each?.Invoke(i, chosen);
        }

        return counts;
    }

    private static double Share(Dictionary<string, int> counts, string destination) => 100.0 * counts[destination] / counts.Values.Sum();
}
