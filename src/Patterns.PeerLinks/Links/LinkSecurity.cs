using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Grpc.Core;

namespace Patterns.PeerLinks.Links;

/// <summary>The shared-secret handshake: a link proves it knows the secret with an HMAC of its node id and session.</summary>
internal sealed class LinkSecurity(PeerLinksOptions options)
{
    public const string NodeHeader = "patterns-node";
    public const string SessionHeader = "patterns-session";
    public const string ProofHeader = "patterns-proof";

    private readonly byte[]? _key = options.SharedSecret is { } secret ? Encoding.UTF8.GetBytes(secret) : null;

    public Metadata Headers(string nodeId, Guid session)
    {
        var headers = new Metadata { { NodeHeader, nodeId }, { SessionHeader, session.ToString("N") } };
        if (_key is not null)
        {
            headers.Add(ProofHeader, Convert.ToBase64String(Proof(nodeId, session)));
        }

        return headers;
    }

    /// <summary>Checks a call's headers; returns the caller's node and session, or why it is refused.</summary>
    public (string Node, Guid Session)? Verify(Metadata headers, out string? refusal)
    {
        var node = headers.GetValue(NodeHeader);
        var sessionText = headers.GetValue(SessionHeader);
        if (string.IsNullOrEmpty(node) || !Guid.TryParseExact(sessionText, "N", out var session))
        {
            refusal = "the call names no node or session";
            return null;
        }

        if (_key is not null)
        {
            var proof = headers.GetValue(ProofHeader);
            Span<byte> given = stackalloc byte[32];
            if (proof is null || !Convert.TryFromBase64String(proof, given, out var written) || written != 32
                || !CryptographicOperations.FixedTimeEquals(given, Proof(node, session)))
            {
                refusal = proof is null ? $"node '{node}' sent no shared-secret proof" : $"node '{node}' sent a wrong shared-secret proof";
                return null;
            }
        }

        refusal = null;
        return (node, session);
    }

    public bool ValidateCertificate(X509Certificate2? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        if (options.ValidateCertificate is { } validate)
        {
            return certificate is not null && validate(certificate, chain, errors);
        }

        return errors == SslPolicyErrors.None;
    }

    private byte[] Proof(string node, Guid session) =>
        HMACSHA256.HashData(_key!, Encoding.UTF8.GetBytes($"patterns-peer-link\n{node}\n{session:N}"));
}
