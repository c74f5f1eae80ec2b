using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Patterns.Messaging;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>Links over TLS with client certificates: trusted nodes talk, an untrusted one is refused.</summary>
public sealed class PeerLinksSecurityTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 180_000)]
    public async Task MutualTls_TrustedNodesExchangeMessages_UntrustedCertificateRefusedAndLogged()
    {
        using var certA = Certificate("node-0");
        using var certB = Certificate("node-1");
        using var stranger = Certificate("stranger");
        var trusted = new HashSet<string>([certA.Thumbprint, certB.Thumbprint]);
        var logs = new ListLogs();
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort(), Mesh.FreePort() };
        PeerLinksOptions Tls(int index, X509Certificate2 certificate, int[] peers) => Mesh.Options(index, ports, (_, o) =>
        {
            o.ListenUri = new Uri($"https://127.0.0.1:{ports[index]}");
            o.Peers.Clear();
            foreach (var p in peers)
            {
                o.Peers.Add(new Uri($"https://127.0.0.1:{ports[p]}"));
            }

            o.ServerCertificate = certificate;
            o.ClientCertificate = certificate;
            o.RequireClientCertificate = true;
            o.ValidateCertificate = (c, _, _) => trusted.Contains(c.Thumbprint);
        });

        await using var a = await PeerLinksTransport.StartAsync(Tls(0, certA, [1]), loggerFactory: logs.Factory);
        await using var b = await PeerLinksTransport.StartAsync(Tls(1, certB, [0]));
        await a.Membership.WaitForAllUpAsync().WaitAsync(Bound);
        await b.Membership.WaitForAllUpAsync().WaitAsync(Bound);
        var queue = $"tls-{Guid.NewGuid():N}";
        var got = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        await b.SubscribeAsync(new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue }, (e, _) => { got.TrySetResult(e); return new(Settlement.Ack); });
        var sent = new Envelope { MessageId = Guid.NewGuid(), MessageType = "tls", Payload = "secret"u8.ToArray() };

        await a.SendAsync(queue, sent);

        (await got.Task.WaitAsync(Bound)).Payload.ToArray().Should().Equal("secret"u8.ToArray());

        await using var intruder = await PeerLinksTransport.StartAsync(Tls(2, stranger, [0]));
        (await logs.WaitForAsync("client certificate rejected", Bound)).Should().Contain("CN=stranger");
        intruder.Membership.Peers.Single().State.Should().NotBe(PeerState.Up);
        var send = async () => await intruder.SendAsync(queue, sent);
        await send.Should().ThrowAsync<QueueNotFoundException>();
    }

    internal static X509Certificate2 Certificate(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], critical: false));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pfx), null);
    }
}
